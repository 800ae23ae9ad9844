"""A band layout held by both georeferenced rasters and image chips (issue 11).

A folder may mix GeoTIFF scenes with plain image chips of the same bands (a
scene-classification set beside the scenes it was cut from). They form one
:class:`~dspt_geo.data.SensorGroup` (its ``chips``), so one stem and one set of
statistics serve both, but they are read in their own ways: the rasters by location
(:class:`~dspt_geo.data.SensorDataset`, :class:`~dspt_geo.data.sampling.PatchStream`),
each chip on its own (:class:`~dspt_geo.data.ChipDataset`,
:class:`~dspt_geo.data.ChipStream`). :class:`MixedStream` interleaves the two, each
sample drawn from the chips with the chips' share of the group's pixels, so that
every pixel of the group is about as likely to be seen.
"""

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from rasterio.crs import CRS
from torch.utils.data import IterableDataset

from .chips import ChipDataset, ChipStream
from .dataset import SensorDataset
from .groups import SensorGroup
from .sampling import PatchStream, process_shard
from .sar import SarConversion, SarMode

__all__ = ('MixedDataset', 'MixedStream')


class MixedDataset:
    """The rasters and the chips of one :class:`~dspt_geo.data.SensorGroup`.

    Offers what streams and statistics use of a group's dataset (``group``,
    ``bands``, ``nodata``, ``sar``, ``crs``, ``res``) and its two parts.

    .. versionadded:: 0.2
    """

    def __init__(self, group: SensorGroup, sar_mode: SarMode = 'auto') -> None:
        """Initialise the dataset.

        Args:
            group: a sensor group with rasters and chips.
            sar_mode: the backscatter scale SAR data is converted to.
        """
        self.group = group
        self.sar_mode = sar_mode
        #: The georeferenced rasters, sampled by location.
        self.rasters = SensorDataset(group, sar_mode=sar_mode)
        #: The image chips, each a sample space of its own.
        self.chips = ChipDataset(group, sar_mode=sar_mode)
        self.bands = group.bands
        self.nodata = group.nodata
        #: The chips' share of the group's pixels.
        self.chip_share = group.chip_pixels / group.pixels

    @property
    def sar(self) -> SarConversion | None:
        """How SAR data is converted (None: not SAR), alike for both parts."""
        return self.rasters.sar

    @property
    def crs(self) -> CRS:
        """The CRS the rasters are sampled in."""
        return self.rasters.crs

    @property
    def res(self) -> tuple[float, float]:
        """The resolution the rasters are sampled at."""
        return self.rasters.res


class MixedStream(IterableDataset[dict[str, Any]]):
    """Samples of a :class:`MixedDataset`, each from the rasters or from the chips.

    Every process (DDP rank x DataLoader worker) yields its share of *length*
    samples; each is drawn from the chips with probability
    :attr:`MixedDataset.chip_share`, else from the rasters. The two parts stream
    as :class:`~dspt_geo.data.sampling.PatchStream` and
    :class:`~dspt_geo.data.ChipStream` with the same settings, so samples look
    alike (``image``, ``valid``).

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        dataset: MixedDataset,
        size: int,
        length: int,
        min_valid_fraction: float = 0.5,
        seed: int = 0,
        window: int | None = None,
    ) -> None:
        """Initialise the stream.

        Args:
            dataset: the group's rasters and chips.
            size: sample side in pixels (the least, with *window*).
            length: samples per epoch over all processes.
            min_valid_fraction: samples with fewer valid pixels are skipped.
            seed: base seed.
            window: side of the windows read where a file or chip is large
                enough (MAE's crops); None is *size*.
        """
        self.dataset = dataset
        self.length = length
        self.seed = seed
        self.epoch = 0
        self._iterations = 0
        # Each part could serve the whole epoch: the draw never runs one dry.
        self.rasters = PatchStream(
            dataset.rasters, size, length, min_valid_fraction, seed, window=window
        )
        self.chips = ChipStream(
            dataset.chips, size, length, min_valid_fraction, seed, window=window
        )

    def set_epoch(self, epoch: int) -> None:
        """Draw new samples for *epoch*."""
        self.epoch = epoch
        self.rasters.set_epoch(epoch)
        self.chips.set_epoch(epoch)

    def __len__(self) -> int:
        """This process's share of the epoch."""
        shard, shards = process_shard()
        return len(range(shard, self.length, shards))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield this process's share of samples, rasters and chips interleaved."""
        shard, shards = process_shard()
        state = np.random.SeedSequence([self.seed, self.epoch, self._iterations, shard])
        self._iterations += 1
        generator = torch.Generator().manual_seed(int(state.generate_state(1)[0]))
        quota = len(range(shard, self.length, shards))
        draws = torch.rand(quota, generator=generator) < self.dataset.chip_share
        rasters, chips = iter(self.rasters), iter(self.chips)
        for from_chips in draws.tolist():
            yield next(chips if from_chips else rasters)
