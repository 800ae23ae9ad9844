"""Labelled chips with a planted signal, and an encoder trained to see it."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from dspt_geo.data.statistics import BandStatistics
from dspt_geo.models import build_encoder, save_model_file

#: Tiny ViT of the probe tests.
MODEL = 'vit_tiny_patch16_224'
MODEL_ARGS = {'depth': 1, 'embed_dim': 32, 'num_heads': 2}
SIZE = 16
PATCH = 8
CLASSES = ('calm', 'shifted', 'bright')


def write_chip(path: Path, chip: np.ndarray) -> None:
    """Write a plain (not georeferenced) GeoTIFF chip, as image-chip data sets are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        'driver': 'GTiff',
        'width': SIZE,
        'height': SIZE,
        'count': 3,
        'dtype': 'uint8',
    }
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(chip)


def planted_chips(
    rng: np.random.Generator, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Chips (N, 3, SIZE, SIZE) whose class sits in band 3 only, under loud nuisance.

    Bands 1 and 2 carry a large random offset per chip (no class signal); band 3
    is offset by 8 per class step, under pixel noise of 10.
    """
    labels = np.arange(count) % len(CLASSES)
    nuisance = rng.uniform(0, 150, size=(count, 2, 1, 1))
    chips = np.empty((count, 3, SIZE, SIZE), dtype=np.float32)
    chips[:, :2] = nuisance + rng.normal(0, 10, size=(count, 2, SIZE, SIZE))
    chips[:, 2] = (
        100 + 8 * labels[:, None, None] + rng.normal(0, 10, size=(count, SIZE, SIZE))
    )
    return np.clip(chips, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope='module')
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of class folders: 40 chips per class, signal in band 3 only."""
    root = tmp_path_factory.mktemp('planted') / 'chips'
    chips, labels = planted_chips(np.random.default_rng(0), 120)
    for index, (chip, label) in enumerate(zip(chips, labels, strict=True)):
        write_chip(root / CLASSES[label] / f'chip_{index:03d}.tif', chip)
    return root


def _statistics(chips: np.ndarray) -> BandStatistics:
    values = chips.astype(np.float64)
    mean = tuple(values.mean(axis=(0, 2, 3)).tolist())
    std = tuple(values.std(axis=(0, 2, 3)).tolist())
    return BandStatistics(
        ('b1', 'b2', 'b3'), mean, std, mean, mean, mean, values[:, 0].size
    )


@pytest.fixture(scope='module')
def trained_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretrained.safetensors whose encoder was trained (supervised) on the signal.

    It stands in for a pre-training run that learnt useful features: what the
    probe must rank above random initialisation.
    """
    torch.manual_seed(0)
    chips, labels = planted_chips(np.random.default_rng(1), 150)
    stats = _statistics(chips)
    encoder, _ = build_encoder(
        MODEL, 3, image_size=SIZE, patch_size=PATCH, model_args=MODEL_ARGS
    )
    head = torch.nn.Linear(32, len(CLASSES))
    mean = torch.tensor(stats.mean).view(1, -1, 1, 1)
    std = torch.tensor(stats.std).view(1, -1, 1, 1)
    images = (torch.from_numpy(chips).float() - mean) / std
    targets = torch.from_numpy(labels)
    optimiser = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(60):
        tokens = encoder(images)
        loss = F.cross_entropy(head(tokens[:, 1:].mean(1)), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    state = {
        (
            f'patch_embed.image.{key.removeprefix("patch_embed.")}'
            if key.startswith('patch_embed.')
            else f'encoder.{key}'
        ): value.detach().clone()
        for key, value in encoder.state_dict().items()
    }
    metadata = {
        'kind': 'mae-pretrained',
        'model': {
            'name': MODEL,
            'model_args': MODEL_ARGS,
            'image_size': SIZE,
            'patch_size': PATCH,
        },
        'sensors': {
            'image': {'bands': ['b1', 'b2', 'b3'], 'statistics': stats.to_dict()}
        },
    }
    path = tmp_path_factory.mktemp('encoder') / 'pretrained.safetensors'
    save_model_file(path, state, metadata)
    return path
