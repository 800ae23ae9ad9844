"""A pre-training run from start to exported model: run folder, resume, export.

The run folder holds ``config.yaml`` (the resolved configuration), ``checkpoints/``
(every ``checkpoint_every`` steps and ``last.ckpt``), ``metrics.csv``, ``previews/``
(reconstructions per epoch), ``stats/`` (normalisation statistics), ``logs/`` (the
files of a ``logger``, :mod:`.tracking`) and, at the end, ``pretrained.safetensors``;
with a probe set, ``previews/probe.png`` and, with ``keep_best_probe``,
``pretrained-last.safetensors``. Running again into a folder with checkpoints resumes
from ``last.ckpt``; a finished run is never overwritten without ``overwrite``.
"""

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ..data import SensorGroup, discover_groups
from ..data.labels import open_labelled
from ..errors import ConfigError, RunDirError
from ..models import load_init_weights, save_model_file
from .callbacks import MetricsCSV, ReconstructionPreview
from .config import PretrainConfig
from .datamodule import PretrainDataModule
from .interrupt import stop_on_signals
from .optim import peak_lr
from .pretrain import MAEPretrainTask
from .probe_callback import PROBE_COLUMN, KNNProbe
from .rundir import (
    build_trainer,
    check_run_dir,
    is_distributed,
    prepare_run_dir,
    save_last_checkpoint,
)
from .tracking import LOGS_DIR

__all__ = ('MODEL_FILE', 'pretrain')

logger = logging.getLogger(__name__)

#: Name of the exported model in the run folder.
MODEL_FILE = 'pretrained.safetensors'

#: The last weights, when the best-probing ones are the model (``keep_best_probe``).
LAST_MODEL_FILE = 'pretrained-last.safetensors'

#: What the run folder holds; ``overwrite`` removes these and nothing else.
_RUN_CONTENTS = (
    'config.yaml',
    'checkpoints',
    'metrics.csv',
    'previews',
    'stats',
    LOGS_DIR,
    MODEL_FILE,
    LAST_MODEL_FILE,
)

#: Settings that fix the model's shape: a run resumes only if they are unchanged.
_SHAPE_SETTINGS = (
    'model', 'model_args', 'patch_size', 'decoder_embed_dim', 'decoder_depth',
    'decoder_num_heads', 'norm_pix_loss',
)  # fmt: skip

#: Below this peak learning rate, short small-batch runs barely move (measured: a
#: tiny ViT at batch 64 learnt with 1e-3 to 1.5e-3, not with the scaled 4e-5).
_LOW_LR = 1e-4


def pretrain(
    config: PretrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[L.Callback] = (),
) -> Path:
    """Run (or resume) continued MAE pre-training and export the model.

    The data, the patch size and the starting weights are checked before anything
    in the run folder is written or, with *overwrite*, deleted.

    Args:
        config: the run's configuration.
        resume: continue a finished run (with a larger ``steps``/``epochs``); an
            unfinished run in the folder is resumed anyway.
        overwrite: delete a previous run in the folder and start over.
        callbacks: further Lightning callbacks (e.g. to time or watch the run).

    Returns:
        path of the exported model file.

    Raises:
        RunDirError: If the folder holds a finished run (without *resume* or
            *overwrite*) or a run of another model shape.
        RunInterruptedError: If SIGTERM, SIGINT or SIGUSR1 stopped the run (after
            saving its checkpoint).
    """
    run = config.run_dir
    checkpoint = check_run_dir(
        config,
        model_file=MODEL_FILE,
        shape_settings=_SHAPE_SETTINGS,
        resume=resume,
        overwrite=overwrite,
    )
    L.seed_everything(config.seed, workers=True, verbose=False)
    groups = discover_groups(
        config.paths, crs=config.crs, res=config.res, nodata=config.nodata
    )
    sensors = {group.name: list(group.bands) for group in groups}

    trainer = _trainer(config, run, multi_sensor=len(groups) > 1)
    lr = peak_lr(
        config.lr,
        config.base_lr,
        config.batch_size * config.accumulate * trainer.world_size,
        low=_LOW_LR,
        suggested=1e-3,
    )
    if not torch.cuda.is_available() and any(
        size in config.model for size in ('base', 'large', 'huge', 'giant')
    ):
        logger.warning(
            'training %s on the CPU is slow (ViT-B/16: about 3 images/s on 2 cores); '
            'for a CPU run choose --model vit_small_patch16_224 or vit_tiny_patch16_224',
            config.model,
        )

    datamodule = PretrainDataModule(
        groups,
        image_size=config.image_size,
        batch_size=config.batch_size,
        batches_per_epoch=max(1, config.samples_per_epoch // config.batch_size),
        stats_dir=run / 'stats',
        sar_mode=config.sar_mode,
        crop_scale=config.crop_scale,
        min_valid_fraction=config.min_valid_fraction,
        num_workers=config.num_workers,
        seed=config.seed,
    )
    task = MAEPretrainTask(
        config.model,
        sensors,
        model_args=config.model_args,
        image_size=config.image_size,
        patch_size=config.patch_size,
        decoder_embed_dim=config.decoder_embed_dim,
        decoder_depth=config.decoder_depth,
        decoder_num_heads=config.decoder_num_heads,
        mask_ratio=config.mask_ratio,
        norm_pix_loss=config.norm_pix_loss,
        lr=lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        min_lr_ratio=config.min_lr_ratio,
    )
    if checkpoint is None:
        load_init_weights(
            task.model, config.init, sensor_bands=sensors
        )  # logs a report
    else:
        _prepare_resume(checkpoint, task, sensors)
        logger.info('resuming from %s', checkpoint)

    prepare_run_dir(config, contents=_RUN_CONTENTS, overwrite=overwrite)
    datamodule.prepare_data()
    datamodule.setup('fit')
    probe = (
        _probe(config, datamodule, sensors, trainer, task)
        if config.probe_images
        else None
    )
    trainer.callbacks.extend(
        [
            ReconstructionPreview(
                run / 'previews', datamodule.preview_batches(), sensors
            ),
            *([probe] if probe is not None else []),
            *callbacks,
        ]
    )
    started = time.time()
    with stop_on_signals(trainer, 'pre-training', run):
        trainer.fit(
            task, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True
        )
    save_last_checkpoint(trainer, run)
    path = run / MODEL_FILE
    if trainer.is_global_zero:
        seconds = time.time() - started
        if probe is not None and probe.best_state is not None:
            _export(
                run / LAST_MODEL_FILE, task, datamodule, config, trainer, seconds, probe
            )
            task.model.load_state_dict(probe.best_state)
            logger.info(
                'exporting the best-probing weights (step %s); the last are in %s',
                probe.best_step,
                LAST_MODEL_FILE,
            )
        _export(path, task, datamodule, config, trainer, seconds, probe)
        logger.info('wrote %s', path)
    return path


def _probe(
    config: PretrainConfig,
    datamodule: PretrainDataModule,
    sensors: dict[str, list[str]],
    trainer: L.Trainer,
    task: MAEPretrainTask,
) -> KNNProbe:
    """The k-NN probe on the held-out labelled chips, for the group they fit."""
    data = open_labelled(
        'classify',
        config.probe_images,
        config.probe_labels or None,
        size=config.image_size,
        seed=config.seed,
    )
    fitting = [name for name, bands in sensors.items() if tuple(bands) == data.bands]
    fitting = fitting or [n for n, b in sensors.items() if len(b) == data.in_chans]
    if not fitting:
        msg = (
            f'--probe-images have {data.in_chans} bands; no sensor group being '
            f'pre-trained has as many ({ {n: len(b) for n, b in sensors.items()} })'
        )
        raise ConfigError(msg)
    metrics = next(c for c in trainer.callbacks if isinstance(c, MetricsCSV))
    return KNNProbe(
        data,
        datamodule.statistics[fitting[0]],
        fitting[0],
        every_n_steps=config.probe_every or config.checkpoint_every,
        folder=config.run_dir / 'previews',
        warmup_steps=config.warmup_steps,
        metrics=metrics,
        keep_best=config.keep_best_probe,
    )


def _prepare_resume(
    checkpoint: Path, task: MAEPretrainTask, sensors: dict[str, list[str]]
) -> None:
    """Check the data against the checkpoint and shape the model like its.

    Raises:
        RunDirError: If the data's sensor groups differ from the checkpoint's.
    """
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)
    if 'model.encoder.pos_embed' in state['state_dict']:
        task.model.learn_pos_embed()  # the run started from learned embeddings
    saved = set(state['hyper_parameters']['sensors'])
    if saved != set(sensors):
        msg = (
            f'the data now forms sensor groups {sorted(sensors)}, the checkpoint was '
            f'trained on {sorted(saved)}; point at the same data, or start a new run'
        )
        raise RunDirError(msg)


def _trainer(config: PretrainConfig, run: Path, *, multi_sensor: bool) -> L.Trainer:
    """A Lightning Trainer with the run's hardware, length and checkpoints.

    With several sensor groups, a step uses one group's stem and head only, which
    DDP must be told (``find_unused_parameters``).
    """
    strategy = config.strategy
    if multi_sensor and strategy in ('auto', 'ddp') and is_distributed(config):
        strategy = 'ddp_find_unused_parameters_true'
    return build_trainer(
        config,
        callbacks=[
            MetricsCSV(
                run / 'metrics.csv',
                config.log_every,
                fields=(
                    *MetricsCSV.FIELDS,
                    *([PROBE_COLUMN] if config.probe_images else []),
                ),
            )
        ],
        strategy=strategy,
        accumulate_grad_batches=config.accumulate,
    )


def _export(
    path: Path,
    task: MAEPretrainTask,
    datamodule: PretrainDataModule,
    config: PretrainConfig,
    trainer: L.Trainer,
    seconds: float,
    probe: KNNProbe | None = None,
) -> None:
    """Write the self-describing model file for the fine-tuners."""
    model = task.model
    sensors = {}
    for name, dataset in datamodule.datasets.items():
        group = dataset.group
        sensors[name] = {
            'in_chans': group.count,
            'bands': list(group.bands),
            'dtype': group.dtype,
            'nodata': group.nodata,
            **(
                dataset.sar.to_dict()
                if dataset.sar
                else {'sar_scale': None, 'sar_mode': None}
            ),
            'crs': group.crs.to_string() if isinstance(group, SensorGroup) else None,
            'res': list(group.res) if isinstance(group, SensorGroup) else None,
            'statistics': datamodule.statistics[name].to_dict(),
        }
    metadata: dict[str, Any] = {
        'kind': 'mae-pretrained',
        'model': {
            'name': config.model,
            'model_args': config.model_args,
            'image_size': config.image_size,
            'patch_size': model.patch_size,
            'embed_dim': model.embed_dim,
            'depth': len(model.encoder.blocks),
            'decoder_embed_dim': model.decoder_embed_dim,
            'decoder_depth': config.decoder_depth,
            'decoder_num_heads': config.decoder_num_heads,
            'norm_pix_loss': model.norm_pix_loss,
            'pos_embed': model.pos_embed_type,
            'mask_ratio': config.mask_ratio,
        },
        'sensors': sensors,
        'training': {
            'steps': trainer.global_step,
            'epochs': trainer.current_epoch,
            'final_loss': float(trainer.callback_metrics.get('loss', float('nan'))),
            'seconds': round(seconds, 1),
            'init': config.init,
            'lr': task.hparams.lr,
            'batch_size': config.batch_size,
            'world_size': trainer.world_size,
        },
    }
    if probe is not None and probe.history:
        metadata['training']['probe'] = {
            'knn_accuracy': [[step, value] for step, value in probe.history],
            'best_step': probe.best_step,
            'exported': 'best'
            if probe.best_state is not None and path.name == MODEL_FILE
            else 'last',
        }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_model_file(path, state, metadata)
