"""Training: Lightning tasks, the data module, and runs from start to model file."""

from .config import PretrainConfig
from .datamodule import PretrainDataModule
from .pretrain import MAEPretrainTask
from .run import MODEL_FILE, pretrain

__all__ = (
    'MODEL_FILE',
    'MAEPretrainTask',
    'PretrainConfig',
    'PretrainDataModule',
    'pretrain',
)
