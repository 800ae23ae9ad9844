"""Frozen-encoder features of labelled chips, extracted once and cached on disk.

For classification each chip becomes two vectors: the mean of its patch tokens
(through the final norm after pooling, as the classification head of fine-tuning
pools) and the class token. For segmentation each chip keeps its patch tokens
(through the final norm) and, per patch, how many of its pixels hold each class
(the targets of the per-token probe, see :mod:`~dspt_geo.probe.segment`). They
are cached per encoder and data in one ``.npz`` file whose name is a
hash of the encoder's fingerprint, the data's fingerprint (paths, sizes and
modification times of the files) and the reading settings, so probing again with
other label fractions, seeds or heads reads no image.
"""

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.labels import collate_labelled
from ..data.statistics import BandStatistics
from ..data.transforms import normalise
from ..models import SensorEncoder
from ..outputs import atomic_write

__all__ = (
    'POOLS',
    'Features',
    'Pool',
    'TokenFeatures',
    'cached_features',
    'data_fingerprint',
    'embed',
    'extract_features',
    'extract_tokens',
    'patch_counts',
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


@dataclass
class TokenFeatures:
    """Patch tokens and per-patch class counts of one split's segmentation chips.

    Attributes:
        tokens: ``(N, T, D)`` patch tokens (final norm), patches row by row, as
            float16 (a token per patch: half the memory and cache).
        counts: ``(N, T, K)`` labelled pixels of each class under each patch (pixels
            without a label or without image data count for no class).
    """

    tokens: npt.NDArray[np.float16]
    counts: npt.NDArray[np.int32]


def embed(
    encoder: SensorEncoder, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled patch tokens and class token of normalised images.

    Returns:
        ``(B, D)`` mean features (norm after pooling) and ``(B, D)`` class tokens.
    """
    tokens = encoder(images, norm=False)
    return encoder.norm(tokens[:, 1:].mean(dim=1)), encoder.norm(tokens[:, 0])


def _normalised_batches(
    encoder: SensorEncoder,
    dataset: Dataset[dict[str, torch.Tensor]],
    statistics: BandStatistics,
    batch_size: int,
    num_workers: int,
    description: str,
) -> Iterator[tuple[dict[str, Any], torch.Tensor]]:
    """Batches of *dataset* in order, each with its normalised images.

    The images are on the encoder's device; the encoder is put in eval mode and
    inference mode stays on while the caller embeds each batch (between yields).
    """
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_labelled,
    )
    device = next(encoder.parameters()).device
    encoder.eval()
    with torch.inference_mode():
        for batch in tqdm(loader, desc=description, unit='batch', leave=False):
            valid = batch['valid'].to(device)
            yield batch, normalise(batch['image'].to(device), valid, statistics)


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
    means, tokens, labels = [], [], []
    for batch, images in _normalised_batches(
        encoder, dataset, statistics, batch_size, num_workers, description
    ):
        mean, cls = embed(encoder, images)
        means.append(mean.float().cpu().numpy())
        tokens.append(cls.float().cpu().numpy())
        labels.append(batch['label'].numpy())
    return Features(
        np.concatenate(means), np.concatenate(tokens), np.concatenate(labels)
    )


def patch_counts(
    mask: torch.Tensor, valid: torch.Tensor, patch: int, num_classes: int
) -> torch.Tensor:
    """Labelled pixels of each class under each patch of segmentation masks.

    Args:
        mask: ``(B, H, W)`` class indices; values outside ``[0, num_classes)`` (the
            ignore index) are no label.
        valid: ``(B, H, W)`` pixels with image data; the others count for nothing.
        patch: patch side in pixels (H and W are multiples of it).
        num_classes: number of classes.

    Returns:
        ``(B, H / patch * W / patch, num_classes)`` int32 counts, patches row by row.
    """
    b, h, w = mask.shape
    labelled = valid & (mask >= 0) & (mask < num_classes)
    classes = torch.where(labelled, mask, num_classes)
    onehot = F.one_hot(classes, num_classes + 1)[..., :num_classes]
    counts = onehot.view(b, h // patch, patch, w // patch, patch, num_classes)
    return counts.sum(dim=(2, 4)).reshape(b, -1, num_classes).to(torch.int32)


def extract_tokens(
    encoder: SensorEncoder,
    dataset: Dataset[dict[str, torch.Tensor]],
    statistics: BandStatistics,
    num_classes: int,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    description: str = 'tokens',
) -> TokenFeatures:
    """Patch tokens and per-patch class counts of every chip of a segmentation dataset.

    Args:
        encoder: the encoder (put in eval mode here).
        dataset: samples with ``image``, ``valid`` and ``mask`` (map-style chips,
            or scene windows, read once in order).
        statistics: normalisation of the images.
        num_classes: number of classes of the masks.
        batch_size: chips per forward pass.
        num_workers: DataLoader workers.
        description: progress bar label.

    Returns:
        the tokens and counts, in dataset order.
    """
    tokens, counts = [], []
    for batch, images in _normalised_batches(
        encoder, dataset, statistics, batch_size, num_workers, description
    ):
        tokens.append(encoder(images)[:, 1:].half().cpu().numpy())
        counts.append(
            patch_counts(
                batch['mask'], batch['valid'], encoder.patch_size, num_classes
            ).numpy()
        )
    return TokenFeatures(np.concatenate(tokens), np.concatenate(counts))


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
    num_classes: int | None = None,
    **kwargs: Any,
) -> dict[str, Features | TokenFeatures]:
    """Features of each split, read from *cache_dir* or extracted and written there.

    Args:
        cache_dir: the cache folder (created).
        key: the file's key (a hash of encoder, data and settings).
        datasets: split name -> dataset.
        encoder: the encoder.
        statistics: normalisation of the images.
        num_classes: None for classification chips (pooled :class:`Features`);
            the number of classes of segmentation masks (:class:`TokenFeatures`).
        **kwargs: passed to :func:`extract_features` or :func:`extract_tokens`.

    Returns:
        split name -> features.
    """
    kind = Features if num_classes is None else TokenFeatures
    names = [field.name for field in dataclasses.fields(kind)]
    path = Path(cache_dir) / f'features-{key}.npz'
    if path.exists():
        with np.load(path) as stored:
            logger.info('features from the cache: %s', path)
            return {
                split: kind(*(stored[f'{split}.{name}'] for name in names))
                for split in datasets
            }
    features = {
        split: (
            extract_features(
                encoder, dataset, statistics, description=f'{split} features', **kwargs
            )
            if num_classes is None
            else extract_tokens(
                encoder,
                dataset,
                statistics,
                num_classes,
                description=f'{split} tokens',
                **kwargs,
            )
        )
        for split, dataset in datasets.items()
    }
    arrays = {
        f'{split}.{name}': getattr(value, name)
        for split, value in features.items()
        for name in names
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, tmp.open('wb') as file:
        np.savez(file, **arrays)
    return features  # type: ignore[return-value]
