"""A fine-tuning run from labelled data to one self-describing model file.

The run folder holds ``config.yaml`` (the resolved configuration),
``checkpoints/`` (every ``checkpoint_every`` steps and ``last.ckpt``),
``metrics.csv`` (training loss and learning rate every ``log_every`` steps, the
validation metrics after every validation), ``data.json`` (normalisation
statistics and class weights, reused on resume) and, at the end,
``model.safetensors`` (see :mod:`dspt_geo.models.finetuned` for its metadata);
``logs/`` holds the files of a ``logger`` (:mod:`.tracking`). Running again into a
folder with checkpoints resumes from ``last.ckpt``; a finished run is never
overwritten without ``overwrite``.
"""

import csv
import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from rasterio.crs import CRS

from ..data.groups import layout_name
from ..data.labels import (
    LabelledData,
    SceneDataset,
    VectorLabels,
    open_labelled,
    write_split_lists,
)
from ..data.sar import SarConversion
from ..data.statistics import BandStatistics
from ..errors import CheckpointError, ConfigError, RunDirError
from ..models import FINETUNED_KIND, build_encoder, build_task_model, save_model_file
from ..models.finetuned import FinetunedMetadata, PredictionSpec
from ..models.head_sizes import detection_sampling, log_head_sizes
from ..models.model_file import read_metadata
from ..outputs import atomic_write
from .callbacks import ConfusionImage, MetricsCSV
from .config import FinetuneConfig, parse_split
from .finetune import AUX_WEIGHT, FinetuneTask
from .finetune_data import (
    FinetuneDataModule,
    most_objects_per_tile,
    segmentation_class_weights,
)
from .interrupt import stop_on_signals
from .metrics import MONITORED
from .optim import peak_lr
from .rundir import build_trainer, check_run_dir, prepare_run_dir, save_last_checkpoint
from .tracking import LOGS_DIR

__all__ = ('FINETUNED_FILE', 'finetune', 'resolve_model_settings')

logger = logging.getLogger(__name__)

#: Name of the exported model in the run folder.
FINETUNED_FILE = 'model.safetensors'

#: Statistics and class weights of the run, computed once.
_DATA_FILE = 'data.json'

#: Folder of the split lists (``train.txt``, ``val.txt``): what the run trained on.
_SPLITS_DIR = 'splits'

#: What the run folder holds; ``overwrite`` removes these and nothing else.
_RUN_CONTENTS = (
    'config.yaml',
    'checkpoints',
    'metrics.csv',
    _DATA_FILE,
    _SPLITS_DIR,
    LOGS_DIR,
    FINETUNED_FILE,
)

#: Settings that fix the model's shape: a run resumes only if they are unchanged.
_SHAPE_SETTINGS = (
    'task', 'model', 'model_args', 'image_size', 'patch_size', 'head_args',
    'pos_embed', 'freeze_encoder',
)  # fmt: skip

#: Below this peak learning rate a short fine-tuning run learns little (measured, a
#: tiny ViT from scratch, segmentation, 120 steps at batch 16: mIoU 0.50 with the
#: scaled 6.25e-5, 0.75 with 5e-4, 0.81 with 1e-3, 0.85 with 3e-3; issue #9).
_LOW_LR = 5e-4

#: The model of a run that names none and starts from no dspt-geo file.
_DEFAULT_MODEL = 'vit_base_patch16_224'
_DEFAULT_IMAGE_SIZE = 224

#: Training columns of ``metrics.csv`` (validation metrics follow).
_TRAIN_FIELDS = ('step', 'epoch', 'loss', 'lr', 'images_per_s')

#: Validation metrics logged per task, one ``metrics.csv`` column each.
_VALIDATION = {
    'classify': ('val_accuracy',),
    'segment': ('val_miou', 'val_pixel_accuracy'),
    'detect': ('val_map_50', 'val_map'),
}


def resolve_model_settings(config: FinetuneConfig) -> FinetuneConfig:
    """Fill the model settings left open from a dspt-geo pre-trained ``init`` file.

    ``model``, ``model_args``, ``image_size`` and ``patch_size`` left as None are
    taken from the file's metadata (``metadata['model']``); without one, the model
    is ``vit_base_patch16_224`` at 224 pixels, its patch size the name's.
    ``tile_overlap`` defaults to a quarter of the image size.

    Args:
        config: the run's configuration.

    Returns:
        the configuration with these settings filled.

    Raises:
        CheckpointError: If ``init`` is a fine-tuned model file.
        ConfigError: If the tile overlap does not fit the image size.
    """
    metadata = read_metadata(config.init) if config.init.lower() != 'none' else None
    if metadata is not None and metadata.get('kind') == FINETUNED_KIND:
        msg = (
            f'--init {config.init} is a fine-tuned model; fine-tuning starts from '
            'pre-trained weights (a dspt-geo pretrained.safetensors, MAE, timm or '
            'SSL4EO file)'
        )
        raise CheckpointError(msg)
    pretrained = (metadata or {}).get('model') or {}
    model = config.model or pretrained.get('name') or _DEFAULT_MODEL
    same = model == pretrained.get('name')  # the file's settings fit its model only
    image_size = int(
        config.image_size
        or (same and pretrained.get('image_size'))
        or _DEFAULT_IMAGE_SIZE
    )
    model_args = config.model_args
    if model_args is None:
        model_args = dict(pretrained.get('model_args') or {}) if same else {}
    return dataclasses.replace(  # checks the overlap against the image size
        config,
        model=model,
        model_args=model_args,
        image_size=image_size,
        patch_size=config.patch_size
        or (pretrained.get('patch_size') if same else None),
        tile_overlap=(
            config.tile_overlap if config.tile_overlap is not None else image_size // 4
        ),
    )


def finetune(
    config: FinetuneConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[L.Callback] = (),
) -> Path:
    """Run (or resume) fine-tuning and export the model file.

    The labelled data, the model settings and the starting weights are checked
    before anything in the run folder is written or, with *overwrite*, deleted.

    Args:
        config: the run's configuration.
        resume: continue a finished run (with a larger ``steps``/``epochs``); an
            unfinished run in the folder is resumed anyway.
        overwrite: delete a previous run in the folder and start over.
        callbacks: further Lightning callbacks.

    Returns:
        path of the exported model file, ``RUN_DIR/model.safetensors``.

    Raises:
        RunDirError: If the folder holds a finished run (without *resume* or
            *overwrite*) or a run of another model or data.
        LabelError: If the labels do not fit the images or the class table.
        CheckpointError: If the starting weights cannot be read or do not fit.
        ConfigError: If the settings do not fit each other or the data.
        RunInterruptedError: If SIGTERM, SIGINT or SIGUSR1 stopped the run (after
            saving its checkpoint).

    .. versionadded:: 0.1
    """
    config = resolve_model_settings(config)
    run = config.run_dir
    checkpoint = check_run_dir(
        config,
        model_file=FINETUNED_FILE,
        shape_settings=_SHAPE_SETTINGS,
        resume=resume,
        overwrite=overwrite,
    )
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = open_labelled(
        config.task,
        config.images,
        config.labels or None,
        config.class_column,
        parse_split(config.split, config.seed),
        class_table=config.class_table,
        class_name=config.class_name,
        size=config.image_size,
        length=config.samples_per_epoch,
        seed=config.seed,
        label_fraction=config.label_fraction,
        label_seed=config.label_seed,
    )
    pretrained = _pretrained_sensor(config.init, data)
    if checkpoint is None:
        model = _build_model(config, data)
        model_config, aux_weight = model.config(), AUX_WEIGHT
    else:
        model = None
        model_config, aux_weight = _checkpoint_model_config(checkpoint, data)
        logger.info('resuming from %s', checkpoint)
    reuse = (run / _DATA_FILE).exists() and (
        checkpoint is not None or rank_zero_only.rank != 0
    )
    statistics, class_weights = (
        _read_data_file(run / _DATA_FILE)
        if reuse
        else _describe_data(config, data, pretrained)
    )

    trainer = build_trainer(
        config,
        callbacks=[
            MetricsCSV(
                run / 'metrics.csv',
                config.log_every,
                fields=_TRAIN_FIELDS,
                validation=_VALIDATION[config.task],
            ),
            ConfusionImage(),
            *callbacks,
        ],
        num_sanity_val_steps=0,
        # Batch norm (UperNet's) over every process's batch under DDP; torch's
        # SyncBatchNorm trains on GPUs only, so CPU processes keep their own.
        sync_batchnorm=torch.cuda.is_available() and config.accelerator != 'cpu',
        **_validation_schedule(config, data),
    )
    lr = peak_lr(
        config.lr,
        config.base_lr,
        config.batch_size * trainer.world_size,
        low=_LOW_LR,
        suggested=1e-3,
    )
    table = data.class_table
    task = FinetuneTask(
        model_config,
        table.names,
        ignore_index=table.ignore_index,
        lr=lr,
        layer_decay=config.layer_decay,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        min_lr_ratio=config.min_lr_ratio,
        class_weights=class_weights,
        freeze_encoder=config.freeze_encoder,
        label_smoothing=config.label_smoothing,
        mixup=config.mixup,
        aux_weight=aux_weight,
        model=model,
    )
    if config.freeze_encoder:
        trained = sum(p.numel() for p in task.parameters() if p.requires_grad)
        logger.info(
            'head-only fine-tuning (--freeze-encoder): %d of %d parameters train',
            trained,
            sum(p.numel() for p in task.parameters()),
        )
    datamodule = FinetuneDataModule(
        data,
        statistics,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        overlap=config.tile_overlap or 0,
        seed=config.seed,
        band_jitter=config.band_jitter,
        random_erase=config.random_erase,
        memory_budget=config.chip_memory * 2**20,
    )

    prepare_run_dir(config, contents=_RUN_CONTENTS, overwrite=overwrite)
    if rank_zero_only.rank == 0:
        write_split_lists(data, run / _SPLITS_DIR)
    if rank_zero_only.rank == 0 and not reuse:
        _write_data_file(run / _DATA_FILE, statistics, class_weights)
    started = time.time()
    with stop_on_signals(trainer, 'fine-tuning', run):
        trainer.fit(
            task, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True
        )
        loss = trainer.callback_metrics.get('loss')  # validate() clears it
        if datamodule.val is not None and task.validated_step != trainer.global_step:
            trainer.validate(task, datamodule=datamodule, verbose=False)
    save_last_checkpoint(trainer, run)
    path = run / FINETUNED_FILE
    if trainer.is_global_zero:
        metadata = _metadata(
            config,
            data,
            statistics,
            task,
            trainer,
            lr=lr,
            class_weights=class_weights,
            final_loss=None if loss is None else float(loss),
            seconds=time.time() - started,
        )
        state = {k: v.detach().cpu() for k, v in task.model.state_dict().items()}
        save_model_file(path, state, metadata)
        logger.info('wrote %s', path)
    return path


def _build_model(config: FinetuneConfig, data: LabelledData) -> torch.nn.Module:
    """The task model around an encoder holding the starting weights."""
    assert config.model is not None and config.image_size is not None, 'resolved'
    metadata = read_metadata(config.init) if config.init.lower() != 'none' else None
    pretrained = (metadata or {}).get('model') or {}
    same = pretrained.get('name') == config.model  # its size fits its model only
    encoder, _ = build_encoder(  # logs the load report
        config.model,
        data.in_chans,
        sensor=_sensor_name(data),
        bands=data.bands,
        init=config.init,
        image_size=config.image_size,
        patch_size=config.patch_size,
        drop_path_rate=config.drop_path,
        model_args=config.model_args,
        pos_embed=config.pos_embed,  # type: ignore[arg-type]
        pretrain_size=pretrained.get('image_size') if same else None,
    )
    patch = encoder.patch_size
    smallest = patch if config.task == 'classify' else 2 * patch
    if config.image_size % patch or config.image_size < smallest:
        fitting = max(smallest, round(config.image_size / patch) * patch)
        msg = (
            f'image size {config.image_size} does not fit patch size {patch}: it must '
            f'be a multiple of it, at least {smallest} px for {config.task}; '
            f'try --image-size {fitting}'
        )
        raise ConfigError(msg)
    head_args = dict(config.head_args)
    if config.task == 'detect':
        sampling = detection_sampling(
            config.image_size, most_objects_per_tile(data.train, seed=config.seed)
        )
        user = head_args.get('detector_args') or {}
        if isinstance(user, dict):  # anything else is refused by the model
            head_args['detector_args'] = {**sampling, **user}
    try:
        model = build_task_model(config.task, encoder, data.num_classes, **head_args)
    except ValueError as error:
        msg = f'--head-arg: {error}'
        raise ConfigError(msg) from error
    log_head_sizes(model)
    return model


def _checkpoint_model_config(
    checkpoint: Path, data: LabelledData
) -> tuple[dict[str, Any], float]:
    """The model config and auxiliary-head weight of the run to resume.

    The config is checked against the data; runs saved before the auxiliary head
    (issue 13) resume without one.
    """
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)
    hparams = state['hyper_parameters']
    names, saved = list(data.class_table.names), list(hparams['class_names'])
    in_chans = hparams['model_config']['encoder']['in_chans']
    if names != saved or in_chans != data.in_chans:
        msg = (
            f'the data now has classes {names} and {data.in_chans} bands; the '
            f'checkpoint was trained on classes {saved} and {in_chans} bands; point '
            'at the same data, or start a new run (--overwrite or a new --out)'
        )
        raise RunDirError(msg)
    config: dict[str, Any] = hparams['model_config']
    return config, float(hparams.get('aux_weight', 0.0))


def _pretrained_sensor(init: str, data: LabelledData) -> dict[str, Any] | None:
    """The ``init`` file's sensor group that the data's images come from, if any.

    A dspt-geo pre-trained file describes every sensor group it was trained on
    (bands, SAR conversion, statistics). The images' group matches the one of the
    same name and bands, else the one with the same band names in the same order.
    Its SAR conversion is applied to the images, so that they are read as in
    pre-training (issue 11).

    Returns:
        the group's metadata entry (with its ``name``), or None.
    """
    metadata = read_metadata(init) if init.lower() != 'none' else None
    sensors = (metadata or {}).get('sensors')
    if not isinstance(sensors, dict):
        return None
    name, bands = _sensor_name(data), list(data.bands)
    entries = [(name, sensors.get(name)), *sorted(sensors.items())]
    for key, entry in entries:
        if isinstance(entry, dict) and entry.get('bands') == bands:
            break
    else:
        logger.info(
            'no sensor group of %s has the bands %s: the data are read by their own '
            'rules and normalised by their own statistics',
            init,
            ', '.join(bands),
        )
        return None
    conversion = SarConversion.from_dict(entry)
    if data.images is not None and conversion != data.images.sar:
        logger.info(
            'images read as sensor group %r of %s was: SAR %s',
            key,
            init,
            conversion or 'none',
        )
        data.images.sar = conversion
    return {**entry, 'name': key}


def _describe_data(
    config: FinetuneConfig, data: LabelledData, pretrained: dict[str, Any] | None
) -> tuple[BandStatistics, list[float] | None]:
    """Normalisation statistics and (segmentation) class weights of the data.

    The statistics are those stored for the images' sensor group in the ``init``
    file (*pretrained*), unless ``recompute_stats`` is set or it stores none; else
    they are estimated from the labelled data.
    """
    stored = (pretrained or {}).get('statistics')
    if stored and not config.recompute_stats:
        statistics = BandStatistics.from_dict(stored)
        logger.info(
            'normalising with the statistics of sensor group %r stored in %s '
            '(--recompute-stats estimates them from the labelled data)',
            pretrained['name'],  # type: ignore[index]
            config.init,
        )
    else:
        statistics = data.statistics(seed=config.seed)
    weights = None
    if config.task == 'segment':
        weights = segmentation_class_weights(
            data.train,
            data.num_classes,
            data.class_table.ignore_index,
            config.class_weights,  # type: ignore[arg-type]
            seed=config.seed,
            class_names=data.class_table.names,
        )
    return statistics, weights


def _write_data_file(
    path: Path, statistics: BandStatistics, class_weights: list[float] | None
) -> None:
    """Write the statistics and class weights, atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(
            json.dumps(
                {'statistics': statistics.to_dict(), 'class_weights': class_weights},
                indent=1,
            )
        )


def _read_data_file(path: Path) -> tuple[BandStatistics, list[float] | None]:
    """The statistics and class weights a run started with."""
    data = json.loads(path.read_text())
    return BandStatistics.from_dict(data['statistics']), data['class_weights']


def _validation_schedule(config: FinetuneConfig, data: LabelledData) -> dict[str, Any]:
    """Trainer arguments: validate every ``val_every`` steps, else every epoch."""
    if data.val is None:
        logger.warning(
            'the split leaves no validation data: the run reports no metric '
            '(choose --split, or add validation data)'
        )
        return {'limit_val_batches': 0}
    if config.val_every is None:
        return {}
    return {'val_check_interval': config.val_every, 'check_val_every_n_epoch': None}


def _sensor_name(data: LabelledData) -> str:
    """The images' sensor group, or the chips' band layout named alike."""
    if data.images is not None:
        return data.images.group.name
    generic = all(band == f'band_{i + 1}' for i, band in enumerate(data.bands))
    dtype = str(getattr(data.train, 'dtype', 'float32'))
    return layout_name(data.in_chans, dtype, () if generic else data.bands)


def _spec(
    config: FinetuneConfig, data: LabelledData, statistics: BandStatistics, patch: int
) -> PredictionSpec:
    """What prediction needs to read scenes as training did and use the outputs."""
    assert config.image_size is not None and config.tile_overlap is not None, 'resolved'
    images = data.images
    nodata, sar, res = None, None, None
    if images is not None:
        nodata = images.nodata
        sar = images.sar
        crs = CRS.from_user_input(images.crs)
        if crs.is_projected and crs.linear_units_factor[1] == 1.0:  # metres
            res = (float(images.res[0]), float(images.res[1]))
    table = data.class_table
    return PredictionSpec(
        task=config.task,
        class_names=tuple(table.names),
        class_colours=tuple(tuple(colour) for colour in table.colours),  # type: ignore[misc]
        bands=tuple(data.bands),
        in_chans=data.in_chans,
        statistics=statistics,
        nodata=None if nodata is None else float(nodata),
        sar=sar,
        tile=config.image_size,
        overlap=config.tile_overlap,
        score_threshold=config.score_threshold,
        sensor=_sensor_name(data),
        res=res,
        max_objects=_max_objects(data, config.image_size),
        patch_size=patch,
    )


def _validation_history(path: Path, name: str) -> list[tuple[int, float]]:
    """(step, value) of every validation of *name* in ``metrics.csv``."""
    if not path.exists():
        return []
    with path.open(newline='') as file:
        rows = list(csv.DictReader(file))
    history = []
    for row in rows:
        value = row.get(name) or ''
        if value and not math.isnan(float(value)):
            history.append((int(row['step']), float(value)))
    return history


def _max_objects(data: LabelledData, size: int) -> int | None:
    """Most objects in one training tile of detection vector labels, else None.

    Prediction sizes the detector's proposals and detections per window from it
    (:func:`dspt_geo.predict.detections.detection_limits`).
    """
    train = data.train
    if data.task != 'detect' or not isinstance(train, SceneDataset):
        return None
    labels = train.labels
    if not isinstance(labels, VectorLabels):
        return None
    xres, yres = train.images.res
    return labels.most_in_window(size * xres, size * yres)


def _metadata(
    config: FinetuneConfig,
    data: LabelledData,
    statistics: BandStatistics,
    task: FinetuneTask,
    trainer: L.Trainer,
    *,
    lr: float,
    class_weights: list[float] | None,
    final_loss: float | None,
    seconds: float,
) -> dict[str, Any]:
    """The model file's metadata (schema in :mod:`dspt_geo.models.finetuned`)."""
    model_config = task.model.config()
    encoder = model_config['encoder']
    metric = f'val_{MONITORED[config.task]}'
    history = _validation_history(config.run_dir / 'metrics.csv', metric)
    best = max(history, key=lambda item: item[1], default=None)
    final = history[-1] if history else None
    return FinetunedMetadata(
        spec=_spec(config, data, statistics, encoder['patch_size']),
        model_config=model_config,
        model={
            'name': encoder['model'],
            'model_args': encoder['model_args'],
            'image_size': encoder['image_size'],
            'embed_dim': task.model.encoder.embed_dim,
            'depth': task.model.num_layers,
        },
        class_table=data.class_table.to_dict(),
        training={
            'steps': trainer.global_step,
            'epochs': trainer.current_epoch,
            'seconds': round(seconds, 1),
            'init': config.init,
            'lr': lr,
            'layer_decay': config.layer_decay,
            'weight_decay': config.weight_decay,
            'drop_path': config.drop_path,
            'freeze_encoder': config.freeze_encoder,
            **(
                {
                    'label_smoothing': config.label_smoothing,
                    'mixup': config.mixup,
                    'random_erase': config.random_erase,
                    'band_jitter': config.band_jitter,
                }
                if config.task == 'classify'
                else {}
            ),
            'batch_size': config.batch_size,
            'world_size': trainer.world_size,
            'final_loss': final_loss,
            'class_weights': class_weights,
            'images': config.images,
            'labels': config.labels,
            'class_column': config.class_column,
            'reader': data.reader,
            'split': config.split,
            'label_fraction': config.label_fraction,
            'seed': config.seed,
            'metric': metric,
            'best': None if best is None else {'step': best[0], 'value': best[1]},
            'final': None if final is None else {'step': final[0], 'value': final[1]},
        },
    ).to_metadata()
