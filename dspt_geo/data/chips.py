"""Image chips as training samples: the fast read, a dataset and a stream.

A chip (a JPEG, PNG or TIFF without georeferencing, see
:class:`~dspt_geo.data.discovery.ChipFile`) is a sample space of its own: samples
are the whole chip or windows of it, never a mosaic of chips. Chips smaller than
the requested sample size are enlarged (bilinear) until their shorter side fits,
then cut like the others: a chip is never down-sampled (issue 9).

Decoding is most of a chip's cost, so the read is kept to the decode: JPEG goes
through torchvision's libjpeg-turbo decoder (the same values as Pillow's, without
its Python header parsing: about twice as fast on 64 px chips), 8-bit PNG through
Pillow, everything else through GDAL with the folder listing that GDAL does on
every open (to find sidecars) switched off, as the header was read while scanning.
"""

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import torch
import torch.nn.functional as F
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from ..errors import EmptyRasterError, RasterReadError
from .discovery import ChipFile
from .groups import ChipGroup, SensorGroup
from .sampling import process_shard
from .sar import SarConversion, SarMode, sar_conversion

__all__ = ('ChipDataset', 'ChipStream', 'decode_jpeg_chip', 'read_chip_pixels')

#: Pillow modes read directly, by GDAL driver: what GDAL would return as bands.
_PILLOW_MODES = {'PNG': frozenset({'L', 'LA', 'RGB', 'RGBA'})}

#: GDAL configuration for chip reads: the header is known, so no folder listing.
_GDAL_OPTIONS = {'GDAL_DISABLE_READDIR_ON_OPEN': 'EMPTY_DIR'}

#: A window (row offset, column offset, rows, columns).
WindowTuple = tuple[int, int, int, int]


def decode_jpeg_chip(
    path: str, count: int | None = None
) -> npt.NDArray[np.uint8] | None:
    """Decode a grey or RGB JPEG file with libjpeg-turbo (torchvision).

    Args:
        path: a JPEG file on disk.
        count: the bands its header gives, or None for grey or RGB alike.

    Returns:
        (bands, rows, cols) uint8, or None where the file decodes to another
        number of bands (CMYK) and needs GDAL.

    Raises:
        RasterReadError: If the file cannot be decoded.
    """
    try:
        data = decode_jpeg(read_file(path), mode=ImageReadMode.UNCHANGED)
    except RuntimeError as error:
        msg = f'cannot read chip {path}: {error}'
        raise RasterReadError(msg) from None
    bands = data.shape[0]
    if bands not in (1, 3) or (count is not None and bands != count):
        return None
    return data.numpy()


def read_chip_pixels(
    chip: ChipFile, window: WindowTuple | None = None
) -> npt.NDArray[Any]:
    """Stored values of a chip (or a window of it), alpha band included.

    Args:
        chip: the chip.
        window: (row, col, rows, cols) to read, or None for the whole chip.

    Returns:
        array (stored bands, rows, cols) in the stored data type.

    Raises:
        RasterReadError: If the file cannot be decoded.
    """
    if chip.driver == 'JPEG' and chip.count in (1, 3) and not chip.alpha:
        data = decode_jpeg_chip(chip.path, chip.count)
        if data is not None:
            if window is None:
                return data
            row, col, rows, cols = window
            return data[:, row : row + rows, col : col + cols]
    modes = _PILLOW_MODES.get(chip.driver)
    if modes is not None:
        try:
            with Image.open(chip.path) as image:
                if image.mode in modes:
                    if window is not None:
                        row, col, rows, cols = window
                        data = np.asarray(
                            image.crop((col, row, col + cols, row + rows))
                        )
                    else:
                        data = np.asarray(image)
                    return data[None] if data.ndim == 2 else data.transpose(2, 0, 1)
        except OSError as error:
            msg = f'cannot read chip {chip.path}: {error}'
            raise RasterReadError(msg) from None
    try:
        with warnings.catch_warnings(), rasterio.Env(**_GDAL_OPTIONS):
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            src = rasterio.open(chip.path)
        with src:
            return src.read(
                window=None
                if window is None
                else Window(window[1], window[0], window[3], window[2])
            )
    except RasterioIOError as error:
        msg = f'cannot read chip {chip.path}: {error}'
        raise RasterReadError(msg) from None


class ChipDataset(Dataset[dict[str, Any]]):
    """The chips of one group, one sample per chip.

    The group is a :class:`~dspt_geo.data.ChipGroup`, or a
    :class:`~dspt_geo.data.SensorGroup` whose layout chips share with rasters
    (its ``chips``; see :mod:`dspt_geo.data.mixed`).

    Samples are ``image`` (float32, bands x rows x cols, stored values, SAR
    converted by *sar_mode*) and ``valid`` (bool, rows x cols): finite, not nodata
    in all bands, not transparent. The interface mirrors
    :class:`~dspt_geo.data.SensorDataset` where streams and statistics use it
    (``group``, ``bands``, ``nodata``, ``sar_mode``).

    .. versionadded:: 0.2
    """

    def __init__(
        self, group: ChipGroup | SensorGroup, sar_mode: SarMode = 'auto'
    ) -> None:
        """Initialise the dataset.

        Args:
            group: the chips.
            sar_mode: the backscatter scale SAR chips are converted to.
        """
        self.group = group
        self.bands = group.bands
        self.nodata = group.nodata
        self.sar_mode = sar_mode
        #: How SAR chips are converted (None: not SAR), as for sensor groups.
        self.sar: SarConversion | None = (
            sar_conversion(group.sar_scale, sar_mode) if group.sar_scale else None
        )
        #: Whether every pixel of a chip without alpha is valid (integers, no
        #: nodata, not SAR): the mask then needs no test.
        self.always_valid = (
            self.sar is None
            and group.nodata is None
            and np.dtype(group.dtype).kind in 'biu'
        )

    def __len__(self) -> int:
        """Number of chips."""
        return len(self.group.chips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The whole chip *index*."""
        return self.read(index)

    def read(self, index: int, window: WindowTuple | None = None) -> dict[str, Any]:
        """Chip *index*, or a window of it.

        Args:
            index: chip index.
            window: (row, col, rows, cols), or None for the whole chip.

        Returns:
            sample with ``image`` and ``valid``.

        Raises:
            RasterReadError: If the chip cannot be decoded or its bands differ from
                the group's.
        """
        chip = self.group.chips[index]
        data = read_chip_pixels(chip, window)
        alpha = None
        if chip.alpha:
            alpha, data = data[-1], data[:-1]
        if data.shape[0] != self.group.count:
            msg = (
                f'chip {chip.path} decodes to {data.shape[0]} bands, its header says '
                f'{self.group.count}; convert it to a plain GeoTIFF'
            )
            raise RasterReadError(msg)
        if self.sar is not None:
            array = np.ascontiguousarray(self.sar.apply(data, self.nodata))
        else:
            # One pass: Pillow's (rows, cols, bands) become contiguous bands.
            array = data.astype(np.float32, order='C', copy=False)
        # The mask is built in numpy: a few torch calls would cost as much as
        # decoding a small chip.
        valid = np.ones(array.shape[1:], dtype=bool)
        if not self.always_valid:
            valid &= np.isfinite(array).all(axis=0)
            if self.nodata is not None and not np.isnan(self.nodata):
                valid &= (array != self.nodata).any(axis=0)
        if alpha is not None:
            valid &= alpha > 0
        return {'image': torch.from_numpy(array), 'valid': torch.from_numpy(valid)}


class ChipStream(IterableDataset[dict[str, Any]]):
    """Chips of a :class:`ChipDataset` as fixed-size samples, sharded by process.

    The counterpart of :class:`~dspt_geo.data.sampling.PatchStream` for chips: every
    process (DDP rank x DataLoader worker) yields its share of *length* samples
    per epoch, taking every n-th chip of a shuffled order shared by all processes,
    so that processes never repeat one another. A chip larger than *size* gives a
    random window; a smaller one is first enlarged (bilinear; its valid mask
    nearest) until its shorter side is *size*. With a *window* larger than *size*
    (MAE's crops, see :class:`~dspt_geo.data.sampling.PatchStream`), a chip gives a
    square window of side *window*, or of its own shorter side where that is less
    (the whole chip, for chips not larger than *size*'s window). Without *size*,
    whole chips are yielded as stored. Samples with too few valid pixels are
    skipped.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        dataset: ChipDataset,
        size: int | None,
        length: int,
        min_valid_fraction: float = 0.5,
        seed: int = 0,
        max_rejections: int = 200,
        window: int | None = None,
    ) -> None:
        """Initialise the stream.

        Args:
            dataset: chips to read.
            size: sample side in pixels (the least, with *window*), or None for
                whole chips.
            length: samples per epoch over all processes.
            min_valid_fraction: samples with a smaller share of valid pixels are
                skipped.
            seed: base seed of the draw.
            max_rejections: rejected samples in a row after which the data is
                deemed empty.
            window: side of the windows read where a chip is large enough; None
                is *size*.
        """
        self.dataset = dataset
        self.size = size
        self.window = window
        self.length = length
        self.min_valid_fraction = min_valid_fraction
        self.seed = seed
        self.max_rejections = max_rejections
        self.epoch = 0
        self._iterations = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw a new set of samples for *epoch*."""
        self.epoch = epoch

    def __len__(self) -> int:
        """This process's share of the epoch."""
        shard, shards = process_shard()
        return len(range(shard, self.length, shards))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield this process's share of valid samples.

        Raises:
            EmptyRasterError: If *max_rejections* samples in a row are mostly nodata.
        """
        shard, shards = process_shard()
        quota = len(range(shard, self.length, shards))
        key = [self.seed, self.epoch, self._iterations]
        self._iterations += 1
        order = torch.Generator().manual_seed(_seed(key))
        windows = torch.Generator().manual_seed(_seed([*key, shard]))
        rejections = 0
        while quota > 0:
            # Every process shuffles alike and takes its own slice of the order.
            permutation = torch.randperm(len(self.dataset), generator=order).tolist()
            mine = (
                permutation[shard::shards]
                if len(permutation) >= shards
                else permutation
            )
            for index in mine:
                sample = self._sample(index, windows)
                if self._too_few_valid(index, sample['valid']):
                    rejections += 1
                    if rejections >= self.max_rejections:
                        msg = (
                            f'{rejections} chips in a row of group '
                            f'{self.dataset.group.name} had under '
                            f'{self.min_valid_fraction:.0%} valid pixels; the chips '
                            'are nodata almost everywhere (check --nodata or the files)'
                        )
                        raise EmptyRasterError(msg)
                    continue
                rejections = 0
                quota -= 1
                yield sample
                if quota == 0:
                    return

    def _too_few_valid(self, index: int, valid: Tensor) -> bool:
        """Whether a sample of chip *index* has too small a share of valid pixels."""
        if self.dataset.always_valid and not self.dataset.group.chips[index].alpha:
            return False
        count = int(valid.count_nonzero())
        return count == 0 or count < self.min_valid_fraction * valid.numel()

    def _sample(self, index: int, generator: torch.Generator) -> dict[str, Any]:
        """Chip *index* as a sample of the stream's size."""
        if self.size is None:
            return self.dataset.read(index)
        chip = self.dataset.group.chips[index]
        if min(chip.height, chip.width) >= self.size:
            size = min(max(self.size, self.window or 0), chip.height, chip.width)
            row = _offset(chip.height - size, generator)
            col = _offset(chip.width - size, generator)
            return self.dataset.read(index, (row, col, size, size))
        size = self.size
        sample = self.dataset.read(index)
        scale = size / min(chip.height, chip.width)
        shape = (
            max(size, round(chip.height * scale)),
            max(size, round(chip.width * scale)),
        )
        image = F.interpolate(
            sample['image'][None], size=shape, mode='bilinear', align_corners=False
        )[0]
        valid = (
            F.interpolate(
                sample['valid'][None, None].float(), size=shape, mode='nearest'
            )[0, 0]
            > 0
        )
        row = _offset(shape[0] - size, generator)
        col = _offset(shape[1] - size, generator)
        return {
            'image': image[:, row : row + size, col : col + size].contiguous(),
            'valid': valid[row : row + size, col : col + size].contiguous(),
        }


def _offset(room: int, generator: torch.Generator) -> int:
    """A random offset in ``0..room``."""
    return int(torch.randint(room + 1, (1,), generator=generator)) if room > 0 else 0


def _seed(key: list[int]) -> int:
    """A generator seed from a key of integers."""
    return int(np.random.SeedSequence(key).generate_state(1)[0])
