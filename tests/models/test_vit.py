from collections.abc import Callable

import pytest
import torch
from timm.layers import DropPath
from timm.models.vision_transformer import VisionTransformer

from dspt_geo.models import create_encoder


def test_tiny_encoder_returns_tokens_for_any_size(
    make_encoder: Callable[..., VisionTransformer],
) -> None:
    encoder = make_encoder(in_chans=5)
    assert isinstance(encoder, VisionTransformer)
    assert encoder.num_classes == 0
    assert encoder.patch_embed.patch_size == (8, 8)
    assert encoder.patch_embed.proj.weight.shape == (32, 5, 8, 8)
    assert len(encoder.blocks) == 2
    tokens = encoder(torch.randn(2, 5, 48, 32))
    assert tokens.shape == (2, 1 + 6 * 4, 32)


def test_options_reach_timm(make_encoder: Callable[..., VisionTransformer]) -> None:
    encoder = make_encoder(drop_path_rate=0.2, mlp_ratio=2.0)
    assert isinstance(encoder.blocks[-1].drop_path1, DropPath)
    assert encoder.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    assert encoder.blocks[0].mlp.fc1.out_features == 64


def test_default_patch_size_comes_from_the_name() -> None:
    encoder = create_encoder(
        'vit_tiny_patch16_224', in_chans=2, depth=1, embed_dim=16, num_heads=1
    )
    assert encoder.patch_embed.patch_size == (16, 16)


def test_pretrained_tag_is_accepted_without_download() -> None:
    encoder = create_encoder(
        'vit_tiny_patch16_224.augreg_in21k',
        in_chans=3,
        depth=1,
        embed_dim=16,
        num_heads=1,
    )
    assert len(encoder.blocks) == 1


@pytest.mark.parametrize(
    ('name', 'match'),
    [
        ('vit_nonexistent_42', 'not a timm model'),
        ('resnet18', 'not a timm VisionTransformer'),
    ],
)
def test_rejects_non_vit(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_encoder(name, in_chans=3)
