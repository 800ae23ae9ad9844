"""Experiment tracking (``--logger``): Lightning's own loggers, and images for them.

A run always writes its own ``metrics.csv`` (:class:`~dspt_geo.train.callbacks.MetricsCSV`);
``--logger`` adds one of Lightning's loggers beside it (issue 13):

* ``csv``: :class:`~lightning.pytorch.loggers.CSVLogger`, every logged value, in
  ``RUN_DIR/logs/csv``;
* ``tensorboard``: :class:`~lightning.pytorch.loggers.TensorBoardLogger`, in
  ``RUN_DIR/logs/tensorboard`` (``tensorboard --logdir RUN_DIR/logs``); needs the
  ``tensorboard`` extra;
* ``mlflow``: :class:`~lightning.pytorch.loggers.MLFlowLogger`, to the tracking
  server of ``MLFLOW_TRACKING_URI``, else to the file store ``RUN_DIR/logs/mlruns``
  (``MLFLOW_ALLOW_FILE_STORE`` is set for it, as MLflow 3 asks), experiment
  ``dspt-geo``, run named after the run folder; needs the ``mlflow`` extra.

A resumed run logs on into the same folder (TensorBoard and CSV continue at the
restored step; MLflow starts a new run of the experiment).
:func:`log_image` hands pictures (reconstruction previews, confusion matrices) to
the loggers that take images: TensorBoard's ``add_image``, MLflow's ``log_image``.
"""

import importlib.util
import os
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger

from ..errors import ConfigError

__all__ = ('LOGGERS', 'LOGS_DIR', 'build_logger', 'check_logger', 'log_image')

#: The ``--logger`` choices; ``none`` writes ``metrics.csv`` only.
LOGGERS = ('none', 'csv', 'tensorboard', 'mlflow')

#: Module each logger needs, and the extra that installs it.
_NEEDS = {'tensorboard': 'tensorboard', 'mlflow': 'mlflow'}

#: Folder of the loggers' files in the run folder.
LOGS_DIR = 'logs'


def check_logger(name: str) -> None:
    """Raise a one-line hint when a logger's package is missing.

    Args:
        name: a ``--logger`` choice.

    Raises:
        ConfigError: If *name* is unknown or its package is not installed.
    """
    if name not in LOGGERS:
        msg = f'--logger must be one of {", ".join(LOGGERS)}, got {name!r}'
        raise ConfigError(msg)
    module = _NEEDS.get(name)
    if module is not None and importlib.util.find_spec(module) is None:
        msg = (
            f'--logger {name} needs the {module} package: '
            f'pip install "dspt-geo[{name}]"'
        )
        raise ConfigError(msg)


def build_logger(name: str, run: Path) -> Logger | None:
    """The Lightning logger of a ``--logger`` choice, writing into the run folder.

    Args:
        name: ``none``, ``csv``, ``tensorboard`` or ``mlflow``.
        run: the run folder.

    Returns:
        the logger, or None for ``none``.

    Raises:
        ConfigError: If *name* is unknown or its package is missing.
    """
    check_logger(name)
    logs = run / LOGS_DIR
    match name:
        case 'csv':
            return CSVLogger(logs, name='', version='csv')
        case 'tensorboard':
            return TensorBoardLogger(
                logs, name='', version='tensorboard', default_hp_metric=False
            )
        case 'mlflow':
            if not os.environ.get('MLFLOW_TRACKING_URI'):
                # MLflow 3 refuses its file store unless told; without a server,
                # the run folder is the place (issue 13).
                os.environ.setdefault('MLFLOW_ALLOW_FILE_STORE', 'true')
            return MLFlowLogger(
                experiment_name='dspt-geo',
                run_name=run.resolve().name,
                save_dir=str(logs / 'mlruns'),
            )
    return None


def log_image(trainer: L.Trainer, tag: str, image: np.ndarray) -> None:
    """Hand an image to the run's loggers that take images (first process only).

    Args:
        trainer: the run's Trainer; its loggers and global step are used.
        tag: name of the image, e.g. ``preview/s2``; ``/`` groups images.
        image: ``(H, W)`` or ``(H, W, 3)`` uint8 pixels.
    """
    if not trainer.is_global_zero:
        return
    step = trainer.global_step
    for each in trainer.loggers:
        if isinstance(each, TensorBoardLogger):
            formats = 'HW' if image.ndim == 2 else 'HWC'
            each.experiment.add_image(tag, image, step, dataformats=formats)
        elif isinstance(each, MLFlowLogger):
            each.experiment.log_image(
                each.run_id, image, artifact_file=f'{tag}/step{step:07d}.png'
            )
