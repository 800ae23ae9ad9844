"""Labelled image chips: one small image per sample, georeferenced or not.

Chips are GeoTIFF, PNG, JPEG or any other raster GDAL reads, in folders or inside a
zip file (read in place through GDAL's ``/vsizip/``). The datasets here are
map-style: ``len(dataset)`` chips, each read on demand, so PyTorch's samplers,
``DistributedSampler`` included, shuffle and shard them.
"""

import copy
import logging
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal, NamedTuple, Self

import numpy as np
import numpy.typing as npt
import rasterio
import torch
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ...errors import IncompatibleRasterError, NoRastersFoundError, RasterReadError
from ..chips import decode_jpeg_chip
from ..discovery import has_alpha, north_up
from .classes import ClassTable
from .collate import SampleBatch
from .windows import ChipWindow, chip_windows

__all__ = (
    'CHIP_EXTENSIONS',
    'ChipClassificationDataset',
    'ChipDetectionDataset',
    'ChipInfo',
    'ChipSegmentationDataset',
    'chip_info',
    'chip_shape',
    'list_files',
    'pad',
    'read_chip',
)

logger = logging.getLogger(__name__)

#: Extensions of chip images looked for in folders.
CHIP_EXTENSIONS = frozenset({
    '.tif', '.tiff', '.png', '.jpg', '.jpeg', '.jp2', '.bmp', '.gif', '.webp',
    '.img', '.vrt',
})  # fmt: skip


def _normalise_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """``size`` as (height, width), or None."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


# -- finding files, in folders and zips ------------------------------------------


def zip_location(path: str) -> tuple[str, str] | None:
    """(zip file, member folder) when *path* is or lies inside a ``.zip``, else None."""
    text = str(path).removeprefix('/vsizip/')
    parts = PurePosixPath(text.replace(os.sep, '/')).parts
    for i, part in enumerate(parts):
        if part.lower().endswith('.zip'):
            archive = str(PurePosixPath(*parts[: i + 1]))
            if os.path.isfile(archive):
                return archive, '/'.join(parts[i + 1 :])
    return None


def list_files(
    root: str | os.PathLike[str], extensions: frozenset[str] = CHIP_EXTENSIONS
) -> list[tuple[str, str]]:
    """Files under *root* (a folder, a ``.zip`` file or a folder inside one).

    Hidden files and folders are skipped.

    Args:
        root: where to look.
        extensions: lower-case extensions to keep.

    Returns:
        (path relative to *root* with ``/`` separators, path GDAL opens) pairs,
        sorted.

    Raises:
        NoRastersFoundError: If *root* does not exist.
    """
    zipped = zip_location(str(root))
    found: list[tuple[str, str]] = []
    if zipped is not None:
        archive, inner = zipped
        prefix = inner.strip('/') + '/' if inner.strip('/') else ''
        with zipfile.ZipFile(archive) as handle:
            for name in handle.namelist():
                if name.endswith('/') or not name.startswith(prefix):
                    continue
                relative = name[len(prefix) :]
                if any(p.startswith('.') for p in relative.split('/')):
                    continue
                if os.path.splitext(name)[1].lower() in extensions:
                    found.append((relative, f'/vsizip/{archive}/{name}'))
        return sorted(found)
    base = Path(root)
    if not base.exists():
        msg = f'no such file or folder: {base}'
        raise NoRastersFoundError(msg)
    if base.is_file():
        return [(base.name, str(base.resolve()))]
    for folder, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        for name in files:
            if (
                name.startswith('.')
                or os.path.splitext(name)[1].lower() not in extensions
            ):
                continue
            full = Path(folder) / name
            found.append((full.relative_to(base).as_posix(), str(full.resolve())))
    return sorted(found)


# -- reading one chip ------------------------------------------------------------


@dataclass(frozen=True)
class ChipInfo:
    """What a chip's header says.

    Attributes:
        count: image bands (an alpha band not counted).
        dtype: numpy name of the stored data type.
        band_names: band names, ``band_1``, ... where the file names none.
        nodata: nodata value, or None.
        alpha: whether the last stored band is an alpha band (0: no data); never
            for GeoTIFF.
        height: rows.
        width: columns.
        crs: CRS as a string, or None when the chip is not georeferenced.
        centre: (x, y) of the chip centre in *crs* units, or None.
    """

    count: int
    dtype: str
    band_names: tuple[str, ...]
    nodata: float | None
    alpha: bool
    height: int
    width: int
    crs: str | None
    centre: tuple[float, float] | None


def _open(path: str) -> rasterio.io.DatasetReader:
    """Open a chip quietly (plain PNG/JPEG chips have no georeference)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as error:
        msg = f'cannot read chip {path}: {error}'
        raise RasterReadError(msg) from None


def chip_info(path: str) -> ChipInfo:
    """Read a chip's header.

    Raises:
        RasterReadError: If GDAL cannot open the file.
    """
    with _open(path) as src:
        alpha = has_alpha(src)
        count = src.count - alpha
        names = tuple(d or '' for d in src.descriptions[:count])
        if not all(names) or len(set(names)) != len(names):
            names = tuple(f'band_{i + 1}' for i in range(count))
        crs, centre = None, None
        if src.crs is not None and north_up(src.transform):
            crs = src.crs.to_string()
            bounds = src.bounds
            centre = (
                (bounds.left + bounds.right) / 2,
                (bounds.bottom + bounds.top) / 2,
            )
        return ChipInfo(
            count=count,
            dtype=src.dtypes[0],
            band_names=names,
            nodata=src.nodata,
            alpha=alpha,
            height=src.height,
            width=src.width,
            crs=crs,
            centre=centre,
        )


def read_chip(
    path: str,
    size: tuple[int, int] | None = None,
    resampling: Resampling = Resampling.bilinear,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """Read a whole chip and its valid-pixel mask.

    A pixel is valid when it is finite in every band, not nodata in all bands, and
    not transparent (alpha 0) where a PNG-like chip has an alpha band, which is
    dropped.

    Args:
        path: the chip (a file or a GDAL path such as ``/vsizip/...``).
        size: (height, width) to resample to, or None for the stored size.
        resampling: resampling when *size* differs from the stored size.

    Returns:
        stored values (bands, H, W) in the stored data type, and the (H, W) mask.

    Raises:
        RasterReadError: If GDAL cannot read the file.
    """
    data, valid, _ = _read_chip(path, size, resampling)
    return data, valid


def _read_chip(
    path: str,
    size: tuple[int, int] | None,
    resampling: Resampling,
    window: ChipWindow | None = None,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_], tuple[int, int]]:
    """:func:`read_chip`, plus the stored (height, width).

    With *window*, the *size* window of the chip starting at its row and column,
    at the stored resolution; where the chip ends first, the window is padded with
    zeros that are not valid.
    """
    fast = _read_plain_jpeg(path, size, window)
    if fast is not None:
        return fast
    with _open(path) as src:
        stored = (src.height, src.width)
        try:
            if window is None:
                data = src.read(
                    out_shape=(src.count, *(size or stored)), resampling=resampling
                )
            else:
                assert size is not None, 'windows have a size'
                height = min(size[0], src.height - window.row)
                width = min(size[1], src.width - window.col)
                data = src.read(window=Window(window.col, window.row, width, height))
        except RasterioIOError as error:
            msg = f'cannot read chip {path}: {error}'
            raise RasterReadError(msg) from None
        alpha = has_alpha(src)
        nodata = src.nodata
    valid = np.ones(data.shape[1:], bool)
    if alpha:
        valid &= data[-1] > 0
        data = data[:-1]
    if data.dtype.kind == 'f':
        valid &= np.isfinite(data).all(axis=0)
    if nodata is not None and not np.isnan(nodata):
        valid &= (data != nodata).any(axis=0)
    if window is not None:
        assert size is not None, 'windows have a size'
        data, valid = pad(data, size), pad(valid, size)
    return data, valid, stored


def _read_plain_jpeg(
    path: str, size: tuple[int, int] | None, window: ChipWindow | None
) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_], tuple[int, int]] | None:
    """:func:`_read_chip` of a plain grey or RGB JPEG file, decoded by libjpeg-turbo.

    The fine-tuning counterpart of the pre-training chip read
    (:func:`~dspt_geo.data.chips.decode_jpeg_chip`): EuroSAT's 64 px JPEGs decode
    several times faster than through GDAL. None where GDAL is needed: GDAL
    paths (``/vsizip/...``), a sidecar that may declare nodata, CMYK, or a chip
    to be resampled to another *size*.
    """
    if not path.lower().endswith(('.jpg', '.jpeg')) or path.startswith('/vsi'):
        return None
    if os.path.exists(f'{path}.aux.xml'):
        return None
    try:
        data = decode_jpeg_chip(path)
    except RasterReadError:
        return None  # not a JPEG after all: GDAL reads it or says why
    if data is None:
        return None
    stored = (data.shape[1], data.shape[2])
    if window is not None:
        assert size is not None, 'windows have a size'
        data = data[
            :, window.row : window.row + size[0], window.col : window.col + size[1]
        ]
        valid = np.ones(data.shape[1:], bool)
        return pad(data, size), pad(valid, size), stored
    if size is not None and size != stored:
        return None
    return data, np.ones(stored, bool), stored


def pad(array: npt.NDArray[Any], size: tuple[int, int]) -> npt.NDArray[Any]:
    """*array* (..., H, W) padded at the bottom and right to *size* with zeros."""
    height, width = array.shape[-2:]
    if (height, width) == size:
        return array
    widths = [(0, 0)] * (array.ndim - 2) + [(0, size[0] - height), (0, size[1] - width)]
    return np.pad(array, widths)


# -- datasets ---------------------------------------------------------------------


class _Place(NamedTuple):
    """Where a sample lies: its chip, its window (None: the whole chip), chip size."""

    chip: int
    window: ChipWindow | None
    stored: tuple[int, int]


class _Memory(NamedTuple):
    """Whole chips decoded once.

    Images (N, C, H, W) in stored values, valid masks (N, H, W), and each chip's
    stored (height, width).
    """

    images: npt.NDArray[Any]
    valid: npt.NDArray[np.bool_]
    stored: list[tuple[int, int]]


class _ChipDataset(Dataset[dict[str, Tensor]]):
    """Chips read on demand; the band layout is the first chip's."""

    #: What the dataset serves (``'classify'``, ``'segment'`` or ``'detect'``).
    task: str = ''
    #: How chips become samples of *size*: ``'resize'`` (each whole chip, resampled)
    #: or ``'window'`` (chips cut into windows of *size*, see :func:`chip_windows`).
    fit: ClassVar[Literal['resize', 'window']] = 'resize'

    def __init__(
        self,
        paths: Sequence[str],
        class_table: ClassTable,
        size: int | tuple[int, int] | None = None,
        transforms: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
    ) -> None:
        if not paths:
            msg = 'no chip to read: the split or the folder is empty'
            raise NoRastersFoundError(msg)
        self.paths = list(paths)
        self.class_table = class_table
        self.size = _normalise_size(size)
        self.transforms = transforms
        first = chip_info(self.paths[0])
        #: Band names (all chips must share the first chip's layout).
        self.bands: tuple[str, ...] = first.band_names
        self.dtype = first.dtype
        #: The windows samples are read from; None: one sample per whole chip.
        #: (height, width) of each chip where they are cut into windows.
        self.shapes: list[tuple[int, int]] = []
        self.windows: list[ChipWindow] | None = None
        if self.fit == 'window' and self.size is not None:
            self.shapes = [(first.height, first.width)]
            self.shapes += [chip_shape(path) for path in self.paths[1:]]
            self.windows = chip_windows(self.shapes, self.size)
        #: Whether each pixel (box) is scored once: see :meth:`scored`.
        self.scoring = False
        #: Every whole chip's image decoded once (:meth:`hold_in_memory`), or None.
        self.memory: _Memory | None = None

    @property
    def in_chans(self) -> int:
        """Number of image bands."""
        return len(self.bands)

    def __len__(self) -> int:
        """Number of samples: chips, or windows of chips."""
        return len(self.paths) if self.windows is None else len(self.windows)

    def scored(self) -> Self:
        """This dataset for evaluation: every labelled pixel or box scored once.

        Windows that overlap (the last of a row or column) keep only the labels of
        the part they own (pixels outside it are ignored; boxes whose centre lies
        outside it are dropped) and say which part that is in ``owned`` (int64
        ``x0, y0, x1, y1``), so that detections are kept alike.
        """
        view = copy.copy(self)
        view.scoring = True
        return view

    def memory_bytes(self) -> int | None:
        """Bytes :meth:`hold_in_memory` needs.

        None where chips are cut into windows (segmentation and detection chips
        larger than the sample size).
        """
        if self.windows is not None:
            return None
        if self.size is not None:
            height, width = self.size
        else:
            first = chip_info(self.paths[0])
            height, width = first.height, first.width
        per_pixel = self.in_chans * np.dtype(self.dtype).itemsize + 1  # + valid mask
        return len(self.paths) * height * width * per_pixel

    def hold_in_memory(self, budget: int) -> bool:
        """Decode every chip's image once into one array when it fits in *budget*.

        Samples then come from memory (an index and a copy) instead of a file
        read and decode per sample: the values, valid masks and labels are those
        read from the files. Masks and boxes of segmentation and detection chips
        are still read per sample.

        Args:
            budget: bytes the stored images and valid masks may take.

        Returns:
            whether the images are now held in memory.
        """
        if self.memory is not None:
            return True
        need = self.memory_bytes()
        if need is None or need > budget:
            return False
        images: npt.NDArray[Any] | None = None
        valid: npt.NDArray[np.bool_] | None = None
        stored: list[tuple[int, int]] = []
        for index in tqdm(range(len(self.paths)), 'decoding chips', leave=False):
            data, mask, place = self._read(index)
            if images is None or valid is None:
                images = np.empty((len(self.paths), *data.shape), data.dtype)
                valid = np.empty((len(self.paths), *mask.shape), bool)
            if data.shape != images.shape[1:]:
                return False  # chips of several sizes and no size to resample to
            images[index], valid[index] = data, mask
            stored.append(place.stored)
        assert images is not None and valid is not None, 'datasets are not empty'
        self.memory = _Memory(images, valid, stored)
        return True

    def _read(
        self, index: int
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_], _Place]:
        """Stored values, valid mask and where sample *index* lies, from the file."""
        window = None if self.windows is None else self.windows[index]
        chip = index if window is None else window.chip
        path = self.paths[chip]
        data, valid, stored = _read_chip(path, self.size, Resampling.bilinear, window)
        if data.shape[0] != self.in_chans:
            msg = (
                f'chip {path} has {data.shape[0]} bands but the first chip '
                f'({self.paths[0]}) has {self.in_chans}; keep one band layout per '
                'data set'
            )
            raise IncompatibleRasterError(msg)
        return data, valid, _Place(chip, window, stored)

    def _image(self, index: int) -> tuple[Tensor, Tensor, _Place]:
        """Image (float32), valid mask and where sample *index* lies."""
        if self.memory is not None:
            image = torch.from_numpy(self.memory.images[index].astype(np.float32))
            valid = torch.from_numpy(self.memory.valid[index].copy())
            return image, valid, _Place(index, None, self.memory.stored[index])
        data, mask, place = self._read(index)
        image = torch.from_numpy(data.astype(np.float32, copy=False))
        return image, torch.from_numpy(mask), place

    def _finish(self, sample: dict[str, Tensor]) -> dict[str, Tensor]:
        """Apply the user's transforms."""
        return self.transforms(sample) if self.transforms is not None else sample


def chip_shape(path: str) -> tuple[int, int]:
    """(height, width) of a chip, from its header.

    Raises:
        RasterReadError: If GDAL cannot open the file.
    """
    with _open(path) as src:
        return (src.height, src.width)


class ChipClassificationDataset(_ChipDataset):
    """Image chips with one class each.

    Samples: ``image`` float32 (C, H, W) stored values, ``label`` int64 scalar,
    ``valid`` bool (H, W).
    """

    task = 'classify'

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int],
        class_table: ClassTable,
        size: int | tuple[int, int] | None = None,
        transforms: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
    ) -> None:
        """Initialise the dataset.

        Args:
            paths: chip files (GDAL paths).
            labels: class index of each chip.
            class_table: the classes.
            size: resample chips to this size (pixels, or (height, width));
                default: the stored size.
            transforms: function applied to each sample.

        Raises:
            ValueError: If *paths* and *labels* differ in length or a label is not
                a class index.

        .. versionadded:: 0.1
        """
        if len(paths) != len(labels):
            msg = f'{len(paths)} chips but {len(labels)} labels'
            raise ValueError(msg)
        bad = [label for label in labels if not 0 <= label < class_table.num_classes]
        if bad:
            msg = f'labels {sorted(set(bad))} are not class indices 0..{class_table.num_classes - 1}'
            raise ValueError(msg)
        super().__init__(paths, class_table, size, transforms)
        self.labels = [int(label) for label in labels]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Read chip *index*."""
        image, valid, _ = self._image(index)
        label = torch.tensor(self.labels[index], dtype=torch.int64)
        return self._finish({'image': image, 'label': label, 'valid': valid})

    def __getitems__(self, indices: Sequence[int]) -> Sequence[dict[str, Tensor]]:
        """Read the chips of one batch: from memory in one copy, else one by one.

        torch's DataLoader calls this for each batch. Chips held in memory (and no
        *transforms*) come as one :class:`~.collate.SampleBatch`, a fancy-index
        copy of the held arrays instead of a copy per chip and a stack.

        .. versionadded:: 0.1
        """
        if self.memory is None or self.transforms is not None:
            return [self[index] for index in indices]
        rows = np.asarray(indices, dtype=np.intp)
        return SampleBatch(
            {
                'image': torch.from_numpy(
                    self.memory.images[rows].astype(np.float32, copy=False)
                ),
                'label': torch.tensor(
                    [self.labels[i] for i in indices], dtype=torch.int64
                ),
                'valid': torch.from_numpy(self.memory.valid[rows]),
            }
        )


class ChipSegmentationDataset(_ChipDataset):
    """Image chips with a mask chip each (paired by the caller).

    Masks hold class values (``class_table.values``) or, when *colour_coded*, RGB
    colours (``class_table.colours``; a one-band mask with a colour table, such as
    a palette PNG, is read through its palette). A mask of another size than its
    image is resampled to it with nearest neighbour. Mask nodata, ignore values and
    pixels where the image has no data become ``class_table.ignore_index``.

    With *size*, chips are cut into windows of that size (:func:`chip_windows`):
    a chip larger than a window gives several samples, never a down-sampled one;
    a chip smaller is padded, and padded pixels are ignored (``valid`` False,
    ``mask`` ``ignore_index``).

    Samples: ``image`` float32 (C, H, W), ``mask`` int64 (H, W), ``valid`` bool
    (H, W).
    """

    task = 'segment'
    fit = 'window'

    def __init__(
        self,
        paths: Sequence[str],
        mask_paths: Sequence[str],
        class_table: ClassTable,
        colour_coded: bool = False,
        size: int | tuple[int, int] | None = None,
        transforms: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
    ) -> None:
        """Initialise the dataset.

        Args:
            paths: image chips.
            mask_paths: mask chip of each image chip.
            class_table: the classes.
            colour_coded: masks are RGB colours of *class_table*, not class values.
            size: window size in pixels (or (height, width)); default: each chip
                whole, as stored.
            transforms: function applied to each sample.

        Raises:
            ValueError: If *paths* and *mask_paths* differ in length.

        .. versionadded:: 0.1
        .. versionchanged:: 0.2
           *size* cuts chips into windows instead of resampling them.
        """
        if len(paths) != len(mask_paths):
            msg = f'{len(paths)} image chips but {len(mask_paths)} masks'
            raise ValueError(msg)
        super().__init__(paths, class_table, size, transforms)
        self.mask_paths = list(mask_paths)
        self.colour_coded = colour_coded

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Read sample *index*: a chip or a window, and its mask."""
        image, valid, place = self._image(index)
        path = self.mask_paths[place.chip]
        with _open(path) as src:
            nodata = src.nodata
            raw = src.read(
                out_shape=(src.count, *place.stored), resampling=Resampling.nearest
            )
            palette = _palette(src) if self.colour_coded and src.count == 1 else None
        if place.window is not None:
            assert self.size is not None, 'windows have a size'
            row, col = place.window.row, place.window.col
            raw = pad(
                raw[:, row : row + self.size[0], col : col + self.size[1]], self.size
            )
        unlabelled = ~valid.numpy()
        if nodata is not None:
            unlabelled = unlabelled | (raw == nodata).all(axis=0)
        if self.scoring and place.window is not None:
            x0, y0, x1, y1 = place.window.owned
            owned = np.zeros_like(unlabelled)
            owned[y0:y1, x0:x1] = True
            unlabelled = unlabelled | ~owned
        source = f'mask {path}'
        if palette is not None:
            mask = self.class_table.encode_colours(
                palette[raw[0]].transpose(2, 0, 1), unlabelled, source
            )
        elif self.colour_coded:
            mask = self.class_table.encode_colours(raw, unlabelled, source)
        else:
            mask = self.class_table.encode_values(raw[0], unlabelled, source)
        sample = {'image': image, 'mask': torch.from_numpy(mask), 'valid': valid}
        return self._finish(sample)


def _palette(src: rasterio.io.DatasetReader) -> npt.NDArray[np.int64] | None:
    """A one-band mask's colour table as a (values, 3) lookup, None without one.

    Values the table lacks map to (-1, -1, -1), a colour no class has.
    """
    try:
        colormap = src.colormap(1)
    except ValueError:
        return None
    lookup = np.full((np.iinfo(src.dtypes[0]).max + 1, 3), -1, np.int64)
    for value, colour in colormap.items():
        lookup[value] = colour[:3]
    return lookup


class ChipDetectionDataset(_ChipDataset):
    """Image chips with horizontal boxes (COCO, Pascal VOC, NWPU VHR-10, HRSC, DOTA).

    Boxes are in pixel coordinates of the stored chip, ``x0, y0, x1, y1`` with
    (0, 0) the top-left corner of the top-left pixel. With *size*, chips are cut
    into windows of that size as for segmentation (smaller chips padded, padding
    not valid); a window keeps the boxes it overlaps, clipped to it. Boxes that
    nothing is left of are dropped.

    Samples: ``image`` float32 (C, H, W), ``boxes`` float32 (N, 4), ``labels`` int64
    (N,), ``valid`` bool (H, W). With *difficult*, also ``ignore_boxes`` (M, 4) and
    ``ignore_labels`` (M,): the difficult boxes, left out of ``boxes`` so that they
    add no loss, and given apart so that evaluation neither counts them as misses
    nor detections of them as false positives (as Pascal VOC evaluation). Batch with
    :func:`~dspt_geo.data.labels.collate_labelled` (box counts differ).
    """

    task = 'detect'
    fit = 'window'

    def __init__(
        self,
        paths: Sequence[str],
        boxes: Sequence[npt.ArrayLike],
        labels: Sequence[npt.ArrayLike],
        class_table: ClassTable,
        size: int | tuple[int, int] | None = None,
        transforms: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
        difficult: Sequence[npt.ArrayLike | None] | None = None,
    ) -> None:
        """Initialise the dataset.

        Args:
            paths: image chips.
            boxes: per chip, an (N, 4) array of ``x0, y0, x1, y1`` pixel boxes.
            labels: per chip, the (N,) class indices of its boxes.
            class_table: the classes.
            size: window size in pixels (or (height, width)); default: each chip
                whole, as stored.
            transforms: function applied to each sample.
            difficult: per chip, (N,) flags of boxes to ignore (None: none).

        Raises:
            ValueError: If the lists differ in length or boxes and labels disagree.

        .. versionadded:: 0.1
        .. versionchanged:: 0.2
           *size* cuts chips into windows instead of resampling them.
        .. versionchanged:: 0.2
           *difficult* boxes are returned as ``ignore_boxes``.
        """
        if not len(paths) == len(boxes) == len(labels):
            msg = (
                f'{len(paths)} chips, {len(boxes)} box lists, {len(labels)} label lists'
            )
            raise ValueError(msg)
        self.boxes = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes]
        self.labels = [np.asarray(lab, dtype=np.int64).reshape(-1) for lab in labels]
        self.difficult = (
            None
            if difficult is None
            else [
                np.zeros(len(b), dtype=bool)
                if flags is None
                else np.asarray(flags, dtype=bool).reshape(-1)
                for b, flags in zip(self.boxes, difficult, strict=True)
            ]
        )
        for k, (path, box, label) in enumerate(
            zip(paths, self.boxes, self.labels, strict=True)
        ):
            flags = len(label) if self.difficult is None else len(self.difficult[k])
            if not len(box) == len(label) == flags:
                msg = f'{path}: {len(box)} boxes but {len(label)} labels, {flags} flags'
                raise ValueError(msg)
        super().__init__(paths, class_table, size, transforms)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Read sample *index*: a chip or a window, and its boxes."""
        image, valid, place = self._image(index)
        boxes = self.boxes[place.chip].copy()
        labels = self.labels[place.chip]
        height, width = place.stored
        row, col = (
            (0, 0) if place.window is None else (place.window.row, place.window.col)
        )
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]] - col, 0, width - col)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]] - row, 0, height - row)
        out_h, out_w = image.shape[1:]
        if place.window is None:
            boxes[:, [0, 2]] *= out_w / width
            boxes[:, [1, 3]] *= out_h / height
        else:
            boxes[:, [0, 2]] = np.minimum(boxes[:, [0, 2]], out_w)
            boxes[:, [1, 3]] = np.minimum(boxes[:, [1, 3]], out_h)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        sample = {'image': image, 'valid': valid}
        if self.scoring and place.window is not None:
            x0, y0, x1, y1 = place.window.owned
            cx = (boxes[:, 0] + boxes[:, 2]) / 2
            cy = (boxes[:, 1] + boxes[:, 3]) / 2
            keep &= (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
            sample['owned'] = torch.tensor(place.window.owned, dtype=torch.int64)
        if self.difficult is not None:
            ignore = self.difficult[place.chip]
            nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            sample['ignore_boxes'] = torch.from_numpy(boxes[nonempty & ignore])
            sample['ignore_labels'] = torch.from_numpy(labels[nonempty & ignore])
            keep &= ~ignore
        sample['boxes'] = torch.from_numpy(boxes[keep])
        sample['labels'] = torch.from_numpy(labels[keep])
        return self._finish(sample)
