"""Per-band normalisation statistics of a sensor group.

Statistics are estimated from a bounded random sample of valid pixels (nodata and
non-finite values excluded, complex SAR already converted), so they cost the same on
a gigabyte and a terabyte. They are cached under a fingerprint of the files and
settings, and travel inside every model file so that prediction normalises exactly
as training did.
"""

import hashlib
import itertools
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..cache import default_cache_dir
from ..errors import EmptyRasterError
from ..outputs import atomic_write
from .chips import ChipDataset, ChipStream
from .dataset import SensorDataset
from .mixed import MixedDataset
from .sampling import PatchStream

__all__ = (
    'BandStatistics',
    'compute_statistics',
    'estimate_statistics',
    'load_or_compute_statistics',
)

logger = logging.getLogger(__name__)

#: Bump when the estimate changes, so old cache entries are not reused.
_STATISTICS_VERSION = 1


@dataclass(frozen=True)
class BandStatistics:
    """Per-band statistics, in band order.

    Attributes:
        bands: band names.
        mean: mean of valid pixels.
        std: standard deviation of valid pixels.
        p02: 2nd percentile (robust lower bound).
        p50: median.
        p98: 98th percentile (robust upper bound).
        pixels: valid pixels per band the estimate rests on.
    """

    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    p02: tuple[float, ...]
    p50: tuple[float, ...]
    p98: tuple[float, ...]
    pixels: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            key: list(v) if isinstance(v, tuple) else v
            for key, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'BandStatistics':
        """Inverse of :meth:`to_dict`."""
        fields: dict[str, Any] = {
            key: tuple(v) if isinstance(v, list) else v for key, v in data.items()
        }
        return cls(**fields)


def compute_statistics(
    dataset: SensorDataset | ChipDataset | MixedDataset,
    num_patches: int = 64,
    size: int = 256,
    max_pixels: int = 1_000_000,
    seed: int = 0,
) -> BandStatistics:
    """Estimate per-band statistics from random patches of *dataset*.

    Args:
        dataset: the sensor group's dataset, a chip group's (whose samples are
            whole chips) or a group's of both (patches and chips drawn by their
            share of the group's pixels, at least one of each).
        num_patches: patches (or chips) to draw.
        size: patch size in pixels (shrunk to fit the smallest raster).
        max_pixels: valid pixels per band kept at most (memory bound).
        seed: seed of the patch draw and the pixel subsample.

    Returns:
        the statistics.

    .. versionchanged:: 0.2
       *dataset* may be a :class:`~dspt_geo.data.chips.ChipDataset` or a
       :class:`~dspt_geo.data.mixed.MixedDataset`.
    """
    streams: list[PatchStream | ChipStream]
    match dataset:
        case ChipDataset():
            streams = [_chip_stream(dataset, num_patches, seed)]
        case MixedDataset():
            chips = min(
                num_patches - 1, max(1, round(num_patches * dataset.chip_share))
            )
            streams = [
                _patch_stream(dataset.rasters, num_patches - chips, size, seed),
                _chip_stream(dataset.chips, chips, seed),
            ]
        case _:
            streams = [_patch_stream(dataset, num_patches, size, seed)]
    generator = torch.Generator().manual_seed(seed)
    return estimate_statistics(
        itertools.chain(*streams),
        tuple(dataset.bands),
        max(1, max_pixels // num_patches),
        generator,
    )


def estimate_statistics(
    samples: Iterable[dict[str, Tensor]],
    bands: Sequence[str],
    per_sample: int,
    generator: torch.Generator,
) -> BandStatistics:
    """Per-band statistics of the valid, finite pixels of *samples*.

    The one estimator of the package: sensor groups, chip groups and labelled chip
    datasets all end here.

    Args:
        samples: samples with ``image`` (C, H, W) and ``valid`` (H, W).
        bands: band names (empty: ``band_1``, ...).
        per_sample: valid pixels kept at most per sample (a seeded subsample).
        generator: generator of the subsample.

    Returns:
        the statistics.

    Raises:
        EmptyRasterError: If the samples hold no valid pixel.

    .. versionadded:: 0.2
    """
    chunks = []
    for sample in samples:
        valid = sample['image'][:, sample['valid']]
        valid = valid[:, torch.isfinite(valid).all(dim=0)]
        if valid.shape[1] > per_sample:
            keep = torch.randperm(valid.shape[1], generator=generator)[:per_sample]
            valid = valid[:, keep]
        chunks.append(valid.double())
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        msg = f'the {len(chunks)} samples drawn hold no valid pixel'
        raise EmptyRasterError(msg)
    pixels = torch.cat(chunks, dim=1).numpy()
    p02, p50, p98 = np.percentile(pixels, [2, 50, 98], axis=1)
    return BandStatistics(
        bands=tuple(bands) or tuple(f'band_{i + 1}' for i in range(pixels.shape[0])),
        mean=tuple(pixels.mean(axis=1).tolist()),
        std=tuple(pixels.std(axis=1).tolist()),
        p02=tuple(p02.tolist()),
        p50=tuple(p50.tolist()),
        p98=tuple(p98.tolist()),
        pixels=int(pixels.shape[1]),
    )


def _chip_stream(dataset: ChipDataset, count: int, seed: int) -> ChipStream:
    """*count* whole chips, for statistics."""
    return ChipStream(
        dataset, size=None, length=count, min_valid_fraction=1e-6, seed=seed
    )


def _patch_stream(
    dataset: SensorDataset, count: int, size: int, seed: int
) -> PatchStream:
    """*count* patches of *size* px (shrunk to fit the largest raster), for statistics."""
    size = min(size, _largest_fitting_size(dataset))
    return PatchStream(
        dataset, size=size, length=count, min_valid_fraction=1e-6, seed=seed
    )


def load_or_compute_statistics(
    dataset: SensorDataset | ChipDataset | MixedDataset,
    cache_dir: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> BandStatistics:
    """Statistics of *dataset* from the cache, computed and cached when absent.

    The cache key covers every file's path, size and modification time, the bands,
    nodata, SAR conversion, CRS, resolution and the estimate's settings: change any and the
    statistics are computed again.

    Args:
        dataset: the sensor group's dataset.
        cache_dir: folder of cached statistics (default: :func:`default_cache_dir`);
            a run folder keeps its own.
        **kwargs: settings passed to :func:`compute_statistics`.

    Returns:
        the statistics.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f'stats-{dataset.group.name}-{_fingerprint(dataset, kwargs)}.json'
    if path.exists():
        try:
            return BandStatistics.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError):
            logger.warning('ignoring unreadable statistics cache %s', path)
    stats = compute_statistics(dataset, **kwargs)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(stats.to_dict(), indent=1))
    except OSError as error:
        logger.warning('could not cache statistics in %s: %s', folder, error)
    return stats


def _largest_fitting_size(dataset: SensorDataset) -> int:
    """Largest patch size (pixels) that fits inside the largest raster."""
    xres, yres = dataset.res
    sides = []
    for geometry in dataset.index.geometry:
        left, bottom, right, top = geometry.bounds
        sides.append(min((right - left) / xres, (top - bottom) / yres))
    return max(1, int(max(sides)))


def _fingerprint(
    dataset: SensorDataset | ChipDataset | MixedDataset, settings: dict[str, Any]
) -> str:
    """Hash of everything the statistics depend on."""
    files = []
    for path in dataset.group.paths:
        stat = os.stat(path)
        files.append((path, stat.st_size, stat.st_mtime_ns))
    key = {
        'version': _STATISTICS_VERSION,
        'files': files,
        'bands': list(dataset.bands),
        'nodata': dataset.nodata,
        'sar': dataset.sar.to_dict() if dataset.sar else None,
        'settings': sorted(settings.items()),
    }
    if not isinstance(dataset, ChipDataset):
        key |= {'crs': dataset.crs.to_wkt(), 'res': list(dataset.res)}
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:16]
