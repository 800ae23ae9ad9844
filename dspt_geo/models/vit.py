"""Vision Transformer encoders from timm, without pretrained weights.

Weights never come from timm's download path: :func:`create_encoder` always builds a
randomly initialised model, and :mod:`dspt_geo.models.weights` fills it from local
files.
"""

from typing import Any

import timm
from timm.models.vision_transformer import VisionTransformer

__all__ = ('create_encoder',)

#: timm modules whose models are ``VisionTransformer`` instances.
_VIT_MODULES = ('vision_transformer', 'deit', 'vision_transformer_hybrid')


def create_encoder(
    model: str = 'vit_base_patch16_224',
    *,
    in_chans: int,
    img_size: int = 224,
    patch_size: int | None = None,
    drop_path_rate: float = 0.0,
    **kwargs: Any,
) -> VisionTransformer:
    """Create a timm Vision Transformer that returns its tokens.

    The encoder has no classifier (``num_classes=0``) and no pooling
    (``global_pool=''``), so ``forward`` returns the normalised tokens, class token
    first, as MAE uses them. It accepts any image size divisible by the patch size
    (``dynamic_img_size=True``).

    Args:
        model: A timm ViT name such as ``vit_tiny_patch16_224``,
            ``vit_small_patch16_224``, ``vit_base_patch16_224``,
            ``vit_large_patch16_224`` or ``vit_huge_patch14_224``; a pretrained tag
            after a dot is allowed and ignored.
        in_chans: Number of input bands.
        img_size: Nominal image size in pixels.
        patch_size: Patch size in pixels; the one of *model* when None.
        drop_path_rate: Stochastic depth rate.
        **kwargs: Further timm ``VisionTransformer`` arguments, which override the
            ones above (for example ``depth``, ``embed_dim``, ``num_heads``).

    Returns:
        The encoder, randomly initialised.

    Raises:
        ValueError: If *model* is not a timm model or not a ``VisionTransformer``.

    .. versionadded:: 0.1
    """
    if not timm.models.is_model_in_modules(model, _VIT_MODULES):
        what = 'a timm VisionTransformer' if timm.is_model(model) else 'a timm model'
        raise ValueError(
            f"'{model}' is not {what}; use a ViT such as 'vit_base_patch16_224' "
            "(timm.list_models('vit_*') lists them)"
        )
    if patch_size is not None:
        kwargs['patch_size'] = patch_size
    options = {
        'in_chans': in_chans,
        'img_size': img_size,
        'drop_path_rate': drop_path_rate,
        'num_classes': 0,
        'global_pool': '',
        'dynamic_img_size': True,
        **kwargs,
    }
    encoder = timm.create_model(model, pretrained=False, **options)
    if not isinstance(encoder, VisionTransformer):
        # The model name is the bad value, hence ValueError.
        raise ValueError(  # noqa: TRY004
            f"'{model}' builds a timm {type(encoder).__name__}, not a VisionTransformer; "
            "use a ViT such as 'vit_base_patch16_224'"
        )
    return encoder
