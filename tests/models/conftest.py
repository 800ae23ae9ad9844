"""Tiny ViTs and masked autoencoders, and model caches that stay empty and offline."""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from dspt_geo.models import MaskedAutoencoder, create_encoder

#: A ViT small enough for CPU tests, on 32-pixel images cut in 8-pixel patches.
TINY_VIT = {
    'depth': 2,
    'embed_dim': 32,
    'num_heads': 2,
    'img_size': 32,
    'patch_size': 8,
}
TINY_DECODER = {'decoder_embed_dim': 16, 'decoder_depth': 1, 'decoder_num_heads': 2}


@pytest.fixture(autouse=True)
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache and torch hub: no test sees the user's caches."""
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    # huggingface_hub reads HF_HOME when imported, so point its constant too.
    cache = tmp_path / 'hf' / 'hub'
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    return cache


@pytest.fixture
def make_encoder() -> Callable[..., VisionTransformer]:
    def make(in_chans: int = 3, **kwargs: Any) -> VisionTransformer:
        return create_encoder(
            'vit_tiny_patch16_224', in_chans=in_chans, **{**TINY_VIT, **kwargs}
        )

    return make


@pytest.fixture
def make_mae(
    make_encoder: Callable[..., VisionTransformer],
) -> Callable[..., MaskedAutoencoder]:
    def make(
        sensors: Mapping[str, int],
        *,
        seed: int = 0,
        encoder: Mapping[str, Any] = {},
        **kwargs: Any,
    ) -> MaskedAutoencoder:
        torch.manual_seed(seed)
        return MaskedAutoencoder(
            make_encoder(**encoder), sensors, **{**TINY_DECODER, **kwargs}
        )

    return make
