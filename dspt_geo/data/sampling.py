"""Samplers that share work across processes, and a stream of valid patches.

torchgeo's samplers run in one process: under DDP every rank, and inside an
``IterableDataset`` every DataLoader worker, would draw the same patches. The
samplers here find their shard (rank x worker) when iterated and draw from a
generator seeded by (seed, epoch, shard), so every process draws different patches
and a run is reproducible. :class:`PatchStream` reads the drawn patches and skips
those with too few valid pixels, which a map-style dataset cannot do.
"""

import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info
from torchgeo.samplers import GridGeoSampler, RandomGeoSampler
from torchgeo.samplers.utils import get_random_bounding_box

from ..errors import EmptyRasterError, IncompatibleRasterError
from .dataset import SensorDataset

__all__ = (
    'DistributedGridGeoSampler',
    'DistributedRandomGeoSampler',
    'PatchStream',
    'process_shard',
)

logger = logging.getLogger(__name__)


def process_shard() -> tuple[int, int]:
    """This process's shard among all DDP ranks times DataLoader workers.

    Returns:
        (shard index, number of shards).
    """
    rank, world = 0, 1
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info else (0, 1)
    return rank * workers + worker, world * workers


def _share(total: int, shard: int, shards: int) -> int:
    """How many of *total* items shard *shard* of *shards* takes."""
    return total // shards + (1 if shard < total % shards else 0)


class DistributedRandomGeoSampler(RandomGeoSampler):
    """:class:`~torchgeo.samplers.RandomGeoSampler` that shards across processes.

    Each process draws ``length / shards`` patches (its share) from its own
    generator, so ranks and workers never repeat one another. Patches are placed on
    the pixel grid of the file they are drawn from, which keeps reads free of
    resampling. With a *window* larger than *size*, every file larger than *size*
    yields square windows of side *window*, or of its own shorter side where that is
    smaller (issue 11: MAE crops a part of a larger image).
    """

    def __init__(
        self,
        dataset: SensorDataset,
        size: int,
        length: int,
        seed: int = 0,
        window: int | None = None,
    ) -> None:
        """Initialise the sampler.

        Args:
            dataset: dataset to draw from.
            size: least patch size in pixels; smaller files are not drawn from.
            length: patches per epoch, over all processes.
            seed: base seed; with the epoch and shard it seeds each process.
            window: side of the windows read in pixels, at least *size*, capped by
                each file's extent; None is *size*.

        Raises:
            IncompatibleRasterError: If *size* is larger than every raster.
        """
        super().__init__(dataset, size, length=length)
        if not self.bounds:
            largest = max(
                (
                    r.width * r.res[0] / dataset.res[0],
                    r.height * r.res[1] / dataset.res[1],
                )
                for r in dataset.group.rasters
            )
            msg = (
                f'patch size {size} px is larger than every raster of group '
                f'{dataset.group.name} (largest: {largest[0]:.0f} x {largest[1]:.0f} px '
                f'at {dataset.res[0]:g} CRS units); lower the patch/image size'
            )
            raise IncompatibleRasterError(msg)
        self.seed = seed
        self.epoch = 0
        self._iterations = 0
        side = max(size, window or size)
        # Window of every file in CRS units (height, width): square in pixels.
        self.windows: list[tuple[float, float]] = []
        for xmin, ymin, xmax, ymax in self.bounds:
            fits = min((xmax - xmin) / self.res[0], (ymax - ymin) / self.res[1])
            pixels = min(side, int(fits + 1e-6))
            self.windows.append((pixels * self.res[1], pixels * self.res[0]))

    def set_epoch(self, epoch: int) -> None:
        """Draw a new set of patches for *epoch* (call before each epoch)."""
        self.epoch = epoch

    def queries(self) -> Iterator[tuple[slice, slice, slice]]:
        """Draw queries for this process without end.

        Every call starts a new, reproducible sequence: persistent DataLoader
        workers, which never see :meth:`set_epoch`, still get new patches per epoch.

        Yields:
            ``(x, y, t)`` slices in the dataset's CRS.
        """
        shard, _ = process_shard()
        state = np.random.SeedSequence([self.seed, self.epoch, self._iterations, shard])
        self._iterations += 1
        generator = torch.Generator().manual_seed(int(state.generate_state(1)[0]))
        while True:
            idx = int(torch.multinomial(self.areas, 1, generator=generator))
            x, y = get_random_bounding_box(
                self.bounds[idx], self.windows[idx], self.res, generator
            )
            interval = self.intervals[idx]
            yield x, y, slice(interval.left, interval.right)

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        """Yield this process's share of the epoch's queries."""
        queries = self.queries()
        for _ in range(len(self)):
            yield next(queries)

    def __len__(self) -> int:
        """This process's share of the epoch."""
        return _share(self.length, *process_shard())


class DistributedGridGeoSampler(GridGeoSampler):
    """:class:`~torchgeo.samplers.GridGeoSampler` whose grid is dealt out to shards.

    Shard *i* of *n* takes every *n*-th window starting at *i*, so all processes
    together cover the grid exactly once.
    """

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        """Yield this process's windows of the grid."""
        shard, shards = process_shard()
        for i, query in enumerate(super().__iter__()):
            if i % shards == shard:
                yield query

    def __len__(self) -> int:
        """Number of windows this process yields."""
        return _share(self.length, *process_shard())


class PatchStream(IterableDataset[dict[str, Any]]):
    """Random patches of a sensor dataset, without patches that are mostly nodata.

    Use with a :class:`~torch.utils.data.DataLoader` and any number of workers, under
    DDP or not: every process streams its own share of *length* patches. Samples
    are torchgeo's (``image``, ``crs``, ``bounds``) plus ``valid``, the
    :meth:`~dspt_geo.data.SensorDataset.valid_mask` the filter computed. Collate
    with :func:`torchgeo.datasets.stack_samples` (windows of one size only).
    """

    def __init__(
        self,
        dataset: SensorDataset,
        size: int,
        length: int,
        min_valid_fraction: float = 0.5,
        seed: int = 0,
        max_rejections: int = 200,
        window: int | None = None,
    ) -> None:
        """Initialise the stream.

        Args:
            dataset: dataset to read.
            size: patch size in pixels (the least, with *window*).
            length: patches per epoch over all processes.
            min_valid_fraction: patches with a smaller share of valid pixels are
                skipped.
            seed: base seed of the sampler.
            max_rejections: rejected draws in a row after which the data is deemed
                empty.
            window: read square windows of this side where a file is large enough,
                else of the file's shorter side (see
                :class:`DistributedRandomGeoSampler`); None is *size*.
        """
        self.dataset = dataset
        self.sampler = DistributedRandomGeoSampler(
            dataset, size, length, seed, window=window
        )
        self.min_valid_fraction = min_valid_fraction
        self.max_rejections = max_rejections

    def set_epoch(self, epoch: int) -> None:
        """Draw a new set of patches for *epoch*."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        """This process's share of the epoch (all its workers together)."""
        return len(self.sampler)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield this process's share of valid patches.

        Raises:
            EmptyRasterError: If *max_rejections* draws in a row are mostly nodata.
        """
        quota = _share(self.sampler.length, *process_shard())
        rejections = 0
        queries = self.sampler.queries()
        while quota > 0:
            sample = self.dataset[next(queries)]
            valid = self.dataset.valid_mask(sample['image'])
            fraction = float(valid.float().mean())
            if fraction < self.min_valid_fraction or math.isnan(fraction):
                rejections += 1
                if rejections >= self.max_rejections:
                    msg = (
                        f'{rejections} patches in a row of group '
                        f'{self.dataset.group.name} had under '
                        f'{self.min_valid_fraction:.0%} valid pixels; the rasters are '
                        'nodata almost everywhere (check --nodata or the files)'
                    )
                    raise EmptyRasterError(msg)
                continue
            rejections = 0
            quota -= 1
            yield {**sample, 'valid': valid}
