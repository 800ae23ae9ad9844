"""What every run shares: its folder, its checkpoints, its Trainer, its random states.

A run folder holds ``config.yaml`` (the resolved configuration), ``checkpoints/``
(``last.ckpt`` and the latest numbered ones), ``metrics.csv`` and, at the end, the
exported model file. Running again into a folder with checkpoints resumes from
``last.ckpt``; a finished run is never overwritten without ``overwrite``. The
folder is checked (:func:`check_run_dir`) before the inputs are opened and written
(:func:`prepare_run_dir`) only once they are known to be good, so a typo never
costs a previous run.
"""

import contextlib
import logging
import random
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.strategies import DDPStrategy

from ..errors import RunDirError
from ..outputs import check_output_path
from .config import RunConfig
from .interrupt import CheckpointOnStop
from .tracking import build_logger

__all__ = (
    'LAST_CHECKPOINT',
    'TrainerSettings',
    'build_trainer',
    'check_run_dir',
    'is_distributed',
    'prepare_run_dir',
    'random_states',
    'resolve_precision',
    'restore_random_states',
    'save_last_checkpoint',
)

logger = logging.getLogger(__name__)

#: The checkpoint a run resumes from, relative to the run folder.
LAST_CHECKPOINT = Path('checkpoints') / 'last.ckpt'

#: Least seconds between two redraws of the training bar (issue 15: Lightning
#: redraws it twice per step and reads every logged metric for it, 0.4 ms of a
#: 58 ms CPU step).
_REDRAW_SECONDS = 0.25


class TrainerSettings(Protocol):
    """The settings of a run configuration that make its Trainer."""

    out: str
    accelerator: str
    devices: str | int
    num_nodes: int
    strategy: str
    precision: str | None
    steps: int | None
    epochs: int | None
    checkpoint_every: int
    log_every: int
    logger: str


def check_run_dir(
    config: RunConfig,
    *,
    model_file: str,
    shape_settings: Sequence[str],
    resume: bool,
    overwrite: bool,
) -> Path | None:
    """Return the checkpoint to resume from, if any, refusing to overwrite a run.

    Reads only: :func:`prepare_run_dir` writes once the inputs are known to be
    good. The processes started later by the DDP launcher take the checkpoint that
    the first one left (none after *overwrite*).

    Args:
        config: the new run's configuration.
        model_file: name of the model file a finished run exports.
        shape_settings: configuration keys that fix the model's shape; a run
            resumes only if they are unchanged.
        resume: continue a finished run.
        overwrite: start over (nothing to resume).

    Returns:
        ``RUN_DIR/checkpoints/last.ckpt`` when there is one to resume from.

    Raises:
        OutputPathError: If the folder cannot be written.
        RunDirError: If the folder holds a finished run (without *resume* or
            *overwrite*) or a run of another model shape.
    """
    run = check_output_path(config.run_dir, '--out', folder=True)
    last = run / LAST_CHECKPOINT
    if rank_zero_only.rank != 0:
        return last if last.exists() else None
    if overwrite:
        return None
    saved = run / 'config.yaml'
    if saved.exists():
        previous = type(config).from_dict(type(config).read_yaml(saved))
        changed = [
            key for key in shape_settings
            if getattr(previous, key) != getattr(config, key)
        ]  # fmt: skip
        if changed and last.exists():
            details = ', '.join(
                f'{k}: {getattr(previous, k)!r} -> {getattr(config, k)!r}'
                for k in changed
            )
            msg = (
                f'{run} holds a run of another model shape ({details}); '
                'choose a new --out, or --overwrite to start over'
            )
            raise RunDirError(msg)
        if (run / model_file).exists() and not resume:
            msg = (
                f'{run} holds a finished run; use --resume with a larger --steps or '
                '--epochs to continue it, --overwrite to start over, or a new --out'
            )
            raise RunDirError(msg)
    return last if last.exists() else None


def prepare_run_dir(
    config: RunConfig, *, contents: Sequence[str], overwrite: bool
) -> None:
    """Empty the run folder for *overwrite* and write the configuration.

    Only the first process writes.

    Args:
        config: the run's configuration, written to ``RUN_DIR/config.yaml``.
        contents: what a run writes into its folder; *overwrite* removes these and
            nothing else.
        overwrite: remove a previous run first.
    """
    if rank_zero_only.rank != 0:
        return
    run = config.run_dir
    if overwrite:
        for name in contents:
            target = run / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    run.mkdir(parents=True, exist_ok=True)
    config.save(run / 'config.yaml')


def resolve_precision(precision: str | None) -> str:
    """The Trainer precision: as given, else bf16-mixed on a GPU, 32-true on the CPU."""
    return precision or ('bf16-mixed' if torch.cuda.is_available() else '32-true')


def is_distributed(settings: TrainerSettings) -> bool:
    """Whether the settings start several DDP processes.

    A throw-away Trainer resolves devices and nodes into a world size; its
    start-up log lines would repeat the real Trainer's, so they are silenced.
    """
    lightning_logger = logging.getLogger('lightning.pytorch')
    level = lightning_logger.level
    lightning_logger.setLevel(logging.WARNING)
    try:
        probe = L.Trainer(
            accelerator=settings.accelerator,
            devices=settings.devices,
            num_nodes=settings.num_nodes,
            strategy=settings.strategy,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
        )
    finally:
        lightning_logger.setLevel(level)
    return probe.world_size > 1 and isinstance(probe.strategy, DDPStrategy)


def build_trainer(
    settings: TrainerSettings,
    *,
    callbacks: Sequence[L.Callback] = (),
    strategy: str | None = None,
    **trainer_args: Any,
) -> L.Trainer:
    """A Lightning Trainer with the run's hardware, length and checkpoints.

    Checkpoints go to ``RUN_DIR/checkpoints`` every ``checkpoint_every`` steps,
    the two latest kept beside ``last.ckpt``, which a stop by signal also writes
    (:mod:`dspt_geo.train.interrupt`). Samplers are the data module's
    (``use_distributed_sampler=False``): the datasets shard themselves. The data
    modules' loaders are made anew every epoch: DataLoader workers get a copy of
    the dataset when an epoch starts, and only a new loader carries the epoch
    number (``set_epoch``) into their copies, so that every epoch draws new patches.
    The ``logger`` setting adds one of Lightning's loggers (:mod:`.tracking`),
    with the learning rates every ``log_every`` steps.

    Args:
        settings: the run's configuration.
        callbacks: further callbacks, after the checkpoints.
        strategy: overrides ``settings.strategy``.
        **trainer_args: further ``L.Trainer`` arguments.

    Returns:
        the Trainer.
    """
    run = Path(settings.out)
    length: dict[str, Any] = (
        {'max_steps': settings.steps, 'max_epochs': -1}
        if settings.steps is not None
        else {'max_epochs': settings.epochs}
    )
    checkpoints = ModelCheckpoint(
        dirpath=run / LAST_CHECKPOINT.parent,
        filename='step{step:07d}',
        auto_insert_metric_name=False,
        every_n_train_steps=settings.checkpoint_every,
        save_last=True,
        save_top_k=2,
        monitor='step',
        mode='max',
    )
    logger = build_logger(settings.logger, run)
    tracked = [] if logger is None else [LearningRateMonitor(logging_interval='step')]
    return L.Trainer(
        accelerator=settings.accelerator,
        devices=settings.devices,
        num_nodes=settings.num_nodes,
        strategy=strategy or settings.strategy,
        precision=resolve_precision(settings.precision),
        callbacks=[
            checkpoints,
            CheckpointOnStop(run / LAST_CHECKPOINT),
            StderrProgressBar(),
            *tracked,
            *callbacks,
        ],
        logger=logger or False,
        default_root_dir=run,
        use_distributed_sampler=False,
        enable_model_summary=False,
        log_every_n_steps=settings.log_every,
        reload_dataloaders_every_n_epochs=1,
        **length,
        **trainer_args,
    )


class StderrProgressBar(TQDMProgressBar):
    """Lightning's progress bars on stderr: stdout carries the commands' data.

    The training bar is redrawn at most every 0.25 s, and at the epoch's last
    batch, instead of at every batch.
    """

    def __init__(self) -> None:
        """Initialise the bars."""
        super().__init__()
        self._drawn = 0.0

    def init_sanity_tqdm(self) -> Tqdm:
        """The sanity-check bar, on stderr."""
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_sanity_tqdm()

    def init_train_tqdm(self) -> Tqdm:
        """The training bar, on stderr."""
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self) -> Tqdm:
        """The validation bar, on stderr."""
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Redraw the training bar when 0.25 s have passed or the epoch ends."""
        bar = self._train_progress_bar
        now = time.perf_counter()
        if (
            bar is not None
            and batch_idx + 1 != bar.total
            and now - self._drawn < _REDRAW_SECONDS
        ):
            return
        self._drawn = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Close the open bars, so that the message of a stop gets a line of its own."""
        for bar in (self._train_progress_bar, self._val_progress_bar):
            if bar is not None and not bar.disable:
                bar.close()


def save_last_checkpoint(trainer: L.Trainer, run: Path) -> None:
    """Write ``last.ckpt`` at the step the run ended on.

    Lightning's ``save_last`` keeps the last *periodic* checkpoint when the run's
    length is not a multiple of the period, so a finished run would resume from
    before its end. Every process calls this; the first one writes.
    """
    trainer.save_checkpoint(run / LAST_CHECKPOINT, weights_only=False)


def random_states() -> dict[str, Any]:
    """The random generators' states, to store in a checkpoint.

    Kept as tensors and plain numbers: the checkpoint loads with
    ``weights_only=True``.

    Returns:
        torch, CUDA, NumPy and Python states.
    """
    _, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        'numpy': [torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        'python': [version, list(python_state), gauss],
    }


def restore_random_states(states: dict[str, Any] | None) -> None:
    """Restore the states of :func:`random_states` (nothing when *states* is empty)."""
    if not states:
        return
    torch.set_rng_state(states['torch'])
    if states['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])
    keys, position, has_gauss, cached = states['numpy']
    np.random.set_state(
        ('MT19937', keys.numpy().astype(np.uint32), position, has_gauss, cached)
    )
    version, python_state, gauss = states['python']
    random.setstate((version, tuple(python_state), gauss))
