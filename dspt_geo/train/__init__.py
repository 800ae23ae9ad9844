"""Training: Lightning tasks, data modules, and runs from start to model file."""

from .config import FinetuneConfig, PretrainConfig
from .datamodule import PretrainDataModule
from .evaluate import evaluate
from .finetune import FinetuneTask
from .finetune_data import FinetuneDataModule
from .finetune_run import FINETUNED_FILE, finetune
from .metrics import TaskMetrics
from .pretrain import MAEPretrainTask
from .run import MODEL_FILE, pretrain

__all__ = (
    'FINETUNED_FILE',
    'MODEL_FILE',
    'FinetuneConfig',
    'FinetuneDataModule',
    'FinetuneTask',
    'MAEPretrainTask',
    'PretrainConfig',
    'PretrainDataModule',
    'TaskMetrics',
    'evaluate',
    'finetune',
    'pretrain',
)
