"""Models: the ViT encoder, the multi-sensor masked autoencoder, and their weights.

:func:`create_encoder` builds a timm ViT, :class:`MaskedAutoencoder` wraps it with one
patch-embedding stem and reconstruction head per sensor group,
:func:`load_init_weights` fills it from local checkpoint files, and
:func:`save_model_file` / :func:`load_model_file` store it with its description.
"""

from .bands import CHECKPOINT_BANDS
from .mae import MAEOutput, MaskedAutoencoder, random_masking
from .model_file import FORMAT_VERSION, METADATA_KEY, load_model_file, save_model_file
from .pos_embed import sincos_pos_embed_1d, sincos_pos_embed_2d
from .vit import create_encoder
from .weights import LoadReport, load_init_weights

__all__ = (
    'CHECKPOINT_BANDS',
    'FORMAT_VERSION',
    'METADATA_KEY',
    'LoadReport',
    'MAEOutput',
    'MaskedAutoencoder',
    'create_encoder',
    'load_init_weights',
    'load_model_file',
    'random_masking',
    'save_model_file',
    'sincos_pos_embed_1d',
    'sincos_pos_embed_2d',
)

# Fine-tuning: the encoder of one sensor group, pyramid necks and heads, task models.
from .classification import ClassificationModel
from .detection import DetectionModel
from .detection_glue import ViTDetBackbone
from .encoder import EncoderSpec, SensorEncoder, build_encoder
from .finetuned import FINETUNED_KIND, load_finetuned
from .heads import BlockPyramid, PyramidPooling, SimpleFeaturePyramid, UperNetHead
from .segmentation import SegmentationModel, default_out_indices
from .task_base import CONFIG_VERSION, TaskName
from .tasks import TaskModel, build_task_model, build_task_model_from_config

# mypy types the first tuple by its length; merge the two tuples when convenient.
__all__ += (  # type: ignore[assignment]
    'CONFIG_VERSION',
    'FINETUNED_KIND',
    'BlockPyramid',
    'ClassificationModel',
    'DetectionModel',
    'EncoderSpec',
    'PyramidPooling',
    'SegmentationModel',
    'SensorEncoder',
    'SimpleFeaturePyramid',
    'TaskModel',
    'TaskName',
    'UperNetHead',
    'ViTDetBackbone',
    'build_encoder',
    'build_task_model',
    'build_task_model_from_config',
    'default_out_indices',
    'load_finetuned',
)
