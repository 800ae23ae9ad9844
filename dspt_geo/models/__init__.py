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
