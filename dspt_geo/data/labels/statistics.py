"""Normalisation statistics of labelled data, by the package's one estimator."""

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..dataset import SensorDataset
from ..statistics import BandStatistics, compute_statistics, estimate_statistics

if TYPE_CHECKING:
    from .data import LabelledData

__all__ = ('labelled_statistics',)


def labelled_statistics(
    data: 'LabelledData | Dataset[dict[str, Tensor]]',
    num_samples: int = 64,
    max_pixels: int = 1_000_000,
    seed: int = 0,
) -> BandStatistics:
    """Per-band statistics of the images, for normalisation.

    Georeferenced images use :func:`~dspt_geo.data.statistics.compute_statistics`
    over the whole sensor group; chip datasets feed a seeded sample of training
    chips to the same estimator,
    :func:`~dspt_geo.data.statistics.estimate_statistics` (valid pixels only).

    Args:
        data: opened labelled data, or one of its datasets.
        num_samples: chips (or patches) to draw.
        max_pixels: valid pixels per band kept at most.
        seed: seed of the draw.

    Returns:
        the statistics.

    Raises:
        EmptyRasterError: If the drawn chips hold no valid pixel.
    """
    images = getattr(data, 'images', None)
    if isinstance(images, SensorDataset):
        return compute_statistics(
            images, num_patches=num_samples, max_pixels=max_pixels, seed=seed
        )
    dataset: Any = getattr(data, 'train', data)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)[:num_samples].tolist()
    return estimate_statistics(
        (dataset[index] for index in order),
        tuple(getattr(dataset, 'bands', ())),
        max(1, max_pixels // max(1, len(order))),
        generator,
    )
