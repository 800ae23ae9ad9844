"""Label rasters: class values (or colours) per pixel, aligned with the images or not.

:class:`RasterLabels` is a torchgeo :class:`~torchgeo.datasets.RasterDataset`
(index, queries, CRS and resolution handling) whose reads warp each label file
onto the chip's grid with nearest neighbour in one step, so class values are never
blended into values no class has. Where no label file covers a pixel, or the file
holds nodata there, the pixel gets :attr:`ClassTable.ignore_index`.
"""

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import DatasetReader
from rasterio.transform import from_bounds
from rasterio.warp import reproject
from rasterio.windows import Window
from torch import Tensor
from torchgeo.datasets import RasterDataset
from torchgeo.datasets.utils import GeoSlice

from ...errors import LabelError
from ..discovery import RasterFile
from .classes import ClassTable

__all__ = ('RasterLabels', 'scan_label_values')

logger = logging.getLogger(__name__)

#: Pixels read at once when scanning label rasters for their values.
_SCAN_WINDOW = 2048


class RasterLabels(RasterDataset):
    """Label rasters served on the images' grid.

    ``labels[x, y, t]`` returns torchgeo's sample with ``mask``: the stored label
    values as float64 (bands, H, W), NaN where there is no label; :meth:`read_mask`
    turns them into class indices.
    """

    is_image = False

    def __init__(
        self,
        rasters: Sequence[RasterFile],
        crs: CRS,
        res: tuple[float, float],
        class_table: ClassTable,
        colour_coded: bool = False,
    ) -> None:
        """Index label rasters.

        Args:
            rasters: the label files (from :func:`~dspt_geo.data.scan_rasters`).
            crs: the images' CRS, which labels are served in.
            res: the images' resolution.
            class_table: the classes the stored values (or colours) encode.
            colour_coded: the files are RGB(A) colour masks of *class_table*.

        Raises:
            LabelError: If *colour_coded* and a file has fewer than three bands.

        .. versionadded:: 0.1
        """
        self.rasters = {raster.path: raster for raster in rasters}
        if colour_coded:
            few = [r.path for r in rasters if r.count < 3]
            if few:
                msg = f'colour masks need red, green and blue bands; {few[0]} has fewer'
                raise LabelError(msg)
        super().__init__(paths=list(self.rasters), crs=crs, res=res, cache=True)
        self.class_table = class_table
        self.colour_coded = colour_coded
        self._handles: dict[str, DatasetReader] = {}
        self._handles_pid = os.getpid()
        self._boxes: npt.NDArray[np.float64] | None = None
        self._boxes_of: Any = None

    @property
    def dtype(self) -> torch.dtype:
        """Stored values as float64 (exact for integers), NaN for no label."""
        return torch.float64

    @property
    def resampling(self) -> Resampling:
        """Nearest neighbour: class values must not be blended."""
        return Resampling.nearest

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without open file handles (DataLoader workers open their own)."""
        state = self.__dict__.copy()
        state['_handles'] = {}
        return state

    def read_mask(
        self, bounds: tuple[float, float, float, float], shape: tuple[int, int]
    ) -> npt.NDArray[np.int64]:
        """Class index per pixel of a chip.

        Args:
            bounds: (left, bottom, right, top) in the images' CRS.
            shape: (height, width) of the chip.

        Returns:
            int64 (height, width); ``ignore_index`` where there is no label.

        Raises:
            LabelError: If a labelled pixel holds a value outside the class table.
        """
        left, bottom, right, top = bounds
        xres, yres = (right - left) / shape[1], (top - bottom) / shape[0]
        # The files a chip touches, found without torchgeo's pandas query (which
        # costs more than the read); the read is this class's _merge_files.
        if self._boxes is None or self._boxes_of is not self.index:
            self._boxes = np.array(
                [g.bounds for g in self.index.geometry], dtype=np.float64
            ).reshape(-1, 4)
            self._boxes_of = self.index
        boxes = self._boxes
        hits = np.flatnonzero(
            (boxes[:, 0] < right)
            & (boxes[:, 2] > left)
            & (boxes[:, 1] < top)
            & (boxes[:, 3] > bottom)
        )
        if not len(hits):
            return np.full(shape, self.class_table.ignore_index, dtype=np.int64)
        query = (
            slice(left, right, xres),
            slice(bottom, top, yres),
            slice(self.mint, self.maxt),
        )
        paths = [self.index.filepath.iloc[i] for i in hits]
        raw = self._merge_files(paths, query).numpy()
        unlabelled = np.isnan(raw).any(axis=0)
        source = f'label rasters at {tuple(round(b, 3) for b in bounds)}'
        if self.colour_coded:
            return self.class_table.encode_colours(
                np.nan_to_num(raw), unlabelled, source
            )
        return self.class_table.encode_values(raw[0], unlabelled, source)

    def _open(self, path: str) -> DatasetReader:
        """Open *path*, cached per process (forked workers reopen)."""
        if self._handles_pid != os.getpid():
            self._handles, self._handles_pid = {}, os.getpid()
        if path not in self._handles:
            self._handles[path] = rasterio.open(path)
        return self._handles[path]

    def _merge_files(
        self,
        filepaths: Sequence[str],
        query: GeoSlice,
        band_indexes: Sequence[int] | None = None,
    ) -> Tensor:
        """Warp each file onto the query's grid (nearest), the first file winning.

        Returns:
            float64 (bands, H, W) stored values, NaN where no file has a label.
        """
        x, y, _ = self._disambiguate_slice(query)
        width = round((x.stop - x.start) / x.step)
        height = round((y.stop - y.start) / y.step)
        transform = from_bounds(x.start, y.start, x.stop, y.stop, width, height)
        bands = [1, 2, 3, 4] if self.colour_coded else [1]
        out: npt.NDArray[np.float64] | None = None
        for path in filepaths:
            src = self._open(path)
            indexes = bands[: min(len(bands), src.count)]
            if self.colour_coded and src.count < 4:
                indexes = [1, 2, 3]
            layer = self._aligned_read(src, indexes, transform, width, height)
            if layer is None:
                layer = np.full((len(indexes), height, width), np.nan)
                reproject(
                    source=rasterio.band(src, indexes),
                    destination=layer,
                    dst_transform=transform,
                    dst_crs=self.crs,
                    src_nodata=src.nodata,
                    dst_nodata=np.nan,
                    resampling=Resampling.nearest,
                    init_dest_nodata=True,
                )
            if out is None:
                out = layer
            else:
                if layer.shape[0] != out.shape[0]:
                    msg = f'label files differ in band count ({path})'
                    raise LabelError(msg)
                gaps = np.isnan(out).any(axis=0)
                out[:, gaps] = layer[:, gaps]
        assert out is not None, 'torchgeo calls with at least one file'
        return torch.from_numpy(out)

    def _aligned_read(
        self,
        src: DatasetReader,
        indexes: list[int],
        transform: Any,
        width: int,
        height: int,
    ) -> npt.NDArray[np.float64] | None:
        """A plain windowed read where the file shares the chip's grid, else None."""
        if src.crs != self.crs or src.transform.b or src.transform.d:
            return None
        src_t = src.transform
        if not (
            np.isclose(src_t.a, transform.a, rtol=1e-9)
            and np.isclose(src_t.e, transform.e, rtol=1e-9)
        ):
            return None
        col = (transform.c - src_t.c) / src_t.a
        row = (transform.f - src_t.f) / src_t.e
        if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            return None
        col0, row0 = round(col), round(row)
        # The part of the chip inside the file, read plainly (a boundless read
        # builds a VRT per call); the rest has no label.
        left, top = max(col0, 0), max(row0, 0)
        right, bottom = min(col0 + width, src.width), min(row0 + height, src.height)
        layer = np.full((len(indexes), height, width), np.nan)
        if right > left and bottom > top:
            window = Window(left, top, right - left, bottom - top)
            data = src.read(indexes, window=window, masked=True)
            part = np.asarray(data.filled(0), dtype=np.float64)
            part[np.ma.getmaskarray(data)] = np.nan
            layer[:, top - row0 : bottom - row0, left - col0 : right - col0] = part
        return layer


def scan_label_values(paths: Sequence[str], colour_coded: bool = False) -> list[int]:
    """Every stored label value of label rasters or mask chips.

    Args:
        paths: the label files (GDAL paths).
        colour_coded: return RGB codes (``r << 16 | g << 8 | b``) of colour masks.

    Returns:
        the sorted distinct values (nodata and transparent pixels left out).

    Raises:
        LabelError: If a file holds fractional values (not a class raster).
    """
    values: set[int] = set()
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            src = rasterio.open(path)
        with src:
            indexes = list(range(1, min(src.count, 4) + 1)) if colour_coded else [1]
            for row in range(0, src.height, _SCAN_WINDOW):
                for col in range(0, src.width, _SCAN_WINDOW):
                    window = Window(
                        col,
                        row,
                        min(_SCAN_WINDOW, src.width - col),
                        min(_SCAN_WINDOW, src.height - row),
                    )
                    data = src.read(indexes, window=window, masked=True)
                    values |= _distinct(data, colour_coded, path)
    return sorted(values)


def _distinct(data: np.ma.MaskedArray, colour_coded: bool, path: str) -> set[int]:
    """Distinct stored values (or colour codes) of a masked block."""
    missing = np.ma.getmaskarray(data).any(axis=0)
    array = np.asarray(data.filled(0))
    if colour_coded:
        if array.shape[0] >= 4:
            missing |= array[3] == 0
        rgb = array[:3].astype(np.int64)
        codes = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
        return set(np.unique(codes[~missing]).tolist())
    band = array[0][~missing]
    if band.dtype.kind == 'f':
        band = band[np.isfinite(band)]
        if (band != np.round(band)).any():
            msg = (
                f'label raster {path} holds fractional values; labels must be class '
                'values (integers)'
            )
            raise LabelError(msg)
    return {int(v) for v in np.unique(band).tolist()}
