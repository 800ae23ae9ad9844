"""Frozen-encoder features of labelled chips, extracted once and cached on disk.

Each chip becomes two vectors: the mean of its patch tokens (through the final
norm after pooling, as the classification head of fine-tuning pools) and the class
token. They are cached per encoder and data in one ``.npz`` file whose name is a
hash of the encoder's fingerprint, the data's fingerprint (paths, sizes and
modification times of the files) and the reading settings, so probing again with
other label fractions, seeds or heads reads no image.
"""

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.labels import collate_labelled
from ..data.statistics import BandStatistics
from ..data.transforms import normalise
from ..models import SensorEncoder

__all__ = (
    'POOLS',
    'Features',
    'Pool',
    'cached_features',
    'data_fingerprint',
    'embed',
    'extract_features',
)

logger = logging.getLogger(__name__)

Pool = Literal['mean', 'cls']

#: How chips become vectors: mean of the patch tokens, or the class token.
POOLS: tuple[Pool, ...] = ('mean', 'cls')


@dataclass
class Features:
    """Features and labels of one split.

    Attributes:
        mean: ``(N, D)`` mean-pooled patch tokens.
        cls: ``(N, D)`` class tokens.
        labels: ``(N,)`` class indices.
    """

    mean: npt.NDArray[np.float32]
    cls: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]

    def pooled(self, pool: Pool) -> npt.NDArray[np.float32]:
        """The features of *pool*."""
        return self.mean if pool == 'mean' else self.cls


def embed(
    encoder: SensorEncoder, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled patch tokens and class token of normalised images.

    Returns:
        ``(B, D)`` mean features (norm after pooling) and ``(B, D)`` class tokens.
    """
    tokens = encoder(images, norm=False)
    return encoder.norm(tokens[:, 1:].mean(dim=1)), encoder.norm(tokens[:, 0])


def extract_features(
    encoder: SensorEncoder,
    dataset: Dataset[dict[str, torch.Tensor]],
    statistics: BandStatistics,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    description: str = 'features',
) -> Features:
    """Embed every chip of a classification dataset with a frozen encoder.

    Args:
        encoder: the encoder (put in eval mode here).
        dataset: samples with ``image``, ``valid`` and ``label``.
        statistics: normalisation of the images.
        batch_size: chips per forward pass.
        num_workers: DataLoader workers.
        description: progress bar label.

    Returns:
        the features, in dataset order.
    """
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_labelled,
    )
    device = next(encoder.parameters()).device
    encoder.eval()
    means, tokens, labels = [], [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=description, unit='batch', leave=False):
            images = normalise(
                batch['image'].to(device), batch['valid'].to(device), statistics
            )
            mean, cls = embed(encoder, images)
            means.append(mean.float().cpu().numpy())
            tokens.append(cls.float().cpu().numpy())
            labels.append(batch['label'].numpy())
    return Features(
        np.concatenate(means), np.concatenate(tokens), np.concatenate(labels)
    )


def data_fingerprint(
    paths: Sequence[str | os.PathLike[str]], settings: dict[str, Any]
) -> str:
    """Hash of the files under *paths* (names, sizes, modification times) and *settings*.

    Args:
        paths: files or folders (walked recursively).
        settings: JSON-ready reading settings (split, image size, ...).

    Returns:
        16 hex digits.
    """
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for root in sorted(str(p) for p in paths):
        files = [Path(root)] if Path(root).is_file() else sorted(Path(root).rglob('*'))
        for path in files:
            if path.is_file():
                stat = path.stat()
                digest.update(f'{path}|{stat.st_size}|{stat.st_mtime_ns}\n'.encode())
    return digest.hexdigest()[:16]


def cached_features(
    cache_dir: str | os.PathLike[str],
    key: str,
    datasets: dict[str, Dataset[dict[str, torch.Tensor]]],
    encoder: SensorEncoder,
    statistics: BandStatistics,
    **kwargs: Any,
) -> dict[str, Features]:
    """Features of each split, read from *cache_dir* or extracted and written there.

    Args:
        cache_dir: the cache folder (created).
        key: the file's key (a hash of encoder, data and settings).
        datasets: split name -> dataset.
        encoder: the encoder.
        statistics: normalisation of the images.
        **kwargs: passed to :func:`extract_features`.

    Returns:
        split name -> features.
    """
    path = Path(cache_dir) / f'features-{key}.npz'
    if path.exists():
        with np.load(path) as stored:
            logger.info('features from the cache: %s', path)
            return {
                split: Features(
                    stored[f'{split}.mean'],
                    stored[f'{split}.cls'],
                    stored[f'{split}.labels'],
                )
                for split in datasets
            }
    features = {
        split: extract_features(
            encoder, dataset, statistics, description=f'{split} features', **kwargs
        )
        for split, dataset in datasets.items()
    }
    arrays = {
        f'{split}.{name}': getattr(value, name)
        for split, value in features.items()
        for name in ('mean', 'cls', 'labels')
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    with tmp.open('wb') as file:
        np.savez(file, **arrays)
    os.replace(tmp, path)
    return features
