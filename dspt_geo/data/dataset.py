"""One sensor group as a torchgeo :class:`~torchgeo.datasets.RasterDataset`.

:class:`SensorDataset` keeps torchgeo's interface (a GeoDataFrame index, ``crs``,
``res``, ``bounds``, ``dataset[x, y, t]`` returning ``image``, ``crs`` and
``bounds``), so torchgeo's samplers and ``&``/``|`` work with it. What it changes is
the read: torchgeo resolves every query through its index, a warped VRT and
``rasterio.merge``, which costs about a millisecond per sample before any pixel is
read. A query that falls inside one file already on the dataset's CRS is answered by
a direct windowed read from a per-process cache of open files. Queries that span
files, or files that need reprojection or are rotated, take torchgeo's general path.
"""

import math
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio
import rasterio.merge
import shapely
import torch
from geopandas import GeoDataFrame
from rasterio.crs import CRS
from rasterio.io import DatasetReader
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from torch import Tensor
from torchgeo.datasets import RasterDataset
from torchgeo.datasets.utils import GeoSlice

from .discovery import RasterFile
from .groups import SensorGroup
from .sar import SarConversion, SarMode, sar_conversion

__all__ = ('SensorDataset', 'valid_pixels')


def valid_pixels(
    image: npt.NDArray[Any], nodata: float | None
) -> npt.NDArray[np.bool_]:
    """Pixels holding data: finite in every band and not nodata in all bands.

    The one rule of training's samples (:meth:`SensorDataset.valid_mask`) and
    prediction's windows (:class:`~dspt_geo.predict.SceneReader`). It works on the
    stored values: integers hold no NaN, and *nodata* compares as a value of the
    image's type, so a nodata no stored value can equal marks nothing.

    Args:
        image: ``(bands, height, width)`` values.
        nodata: value marking missing pixels, or None (NaN: only non-finite
            values are missing).

    Returns:
        ``(height, width)`` bool mask.

    .. versionadded:: 0.1
    """
    dtype = image.dtype
    if dtype.kind in 'fc':
        valid = np.isfinite(image).all(axis=0)
    else:
        valid = np.ones(image.shape[1:], dtype=bool)
    if nodata is None or math.isnan(nodata):
        return valid
    value: np.generic
    if dtype.kind in 'fc':
        # float16 compares as float32 would (no rounding of nodata to half).
        small = dtype.kind == 'f' and dtype.itemsize < 4
        value = np.float32(nodata) if small else dtype.type(nodata)
    else:
        info = np.iinfo(dtype)
        if nodata != int(nodata) or not info.min <= nodata <= info.max:
            return valid
        value = dtype.type(int(nodata))
    valid &= (image != value).any(axis=0)
    return valid


#: Open files kept per process; beyond this the least recently used is closed.
_MAX_OPEN_FILES = 128


class _OpenFile(NamedTuple):
    """An open file and its north-up geotransform (origin, pixel size)."""

    src: DatasetReader
    origin_x: float
    origin_y: float
    pixel_x: float
    pixel_y: float


class SensorDataset(RasterDataset):
    """The rasters of one :class:`~dspt_geo.data.SensorGroup`, sampled by location.

    Samples are float32 ``image`` tensors of shape (bands, height, width) in the
    group's CRS and resolution; a SAR group (complex or real-valued, see
    :mod:`dspt_geo.data.sar`) is converted to the backscatter scale of
    *sar_mode*. Pixels outside every file are filled with the group's nodata value
    (0 when it has none); :meth:`valid_mask` tells valid pixels apart.
    """

    def __init__(
        self,
        group: SensorGroup,
        bands: Sequence[str] | None = None,
        sar_mode: SarMode = 'auto',
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache: bool = True,
    ) -> None:
        """Index a sensor group.

        Args:
            group: the rasters, their CRS, resolution and nodata value.
            bands: bands to return, by name (default: all, in file order).
            sar_mode: the backscatter scale a SAR group is served in: ``'auto'``
                (dB), ``'db'``, ``'amplitude'`` or ``'intensity'``; ignored for
                other groups.
            transforms: function applied to each sample dict.
            cache: keep files open between samples.

        Raises:
            ValueError: If *bands* names a band the group does not have.

        .. versionchanged:: 0.2
           *sar_mode* applies to real-valued SAR too; ``'auto'`` is the default.
        """
        self.group = group
        self.paths = [raster.path for raster in group.rasters]
        self.all_bands = group.bands
        self.bands = tuple(bands) if bands else group.bands
        unknown = [band for band in self.bands if band not in self.all_bands]
        if unknown:
            msg = f'bands {unknown} not in group {group.name} ({", ".join(self.all_bands)})'
            raise ValueError(msg)
        #: How SAR samples are converted (None: not SAR); callers may replace it
        #: before reading, e.g. with the conversion a pre-trained model used.
        scale = group.sar_scale or ('complex' if group.is_complex else None)
        self.sar: SarConversion | None = (
            sar_conversion(scale, sar_mode) if scale else None
        )
        self.transforms = transforms
        self.cache = cache
        self.nodata = group.nodata
        self.separate_files = bool(group.rasters) and group.rasters[0].separate_files
        self.band_indexes = (
            None
            if self.separate_files
            else [self.all_bands.index(band) + 1 for band in self.bands]
        )
        self._res = group.res
        self._rasters = {raster.path: raster for raster in group.rasters}
        self._handles: OrderedDict[str, _OpenFile] = OrderedDict()
        self._handles_pid = os.getpid()

        geometries = [
            shapely.box(*transform_bounds(r.crs, group.crs, *r.bounds, densify_pts=21))
            for r in group.rasters
        ]
        times = pd.IntervalIndex.from_tuples(
            [(self.mint, self.maxt)] * len(geometries), closed='both', name='datetime'
        )
        self.index = GeoDataFrame(
            {'filepath': self.paths}, index=times, geometry=geometries, crs=group.crs
        )
        self._build_lookup()

    @property
    def crs(self) -> CRS:
        """CRS that samples are served in."""
        crs: CRS = self.index.crs
        return crs

    @crs.setter
    def crs(self, new_crs: CRS) -> None:
        """Reproject the index (quietly, unlike torchgeo, which prints)."""
        if new_crs != self.index.crs:
            self.index = self.index.to_crs(new_crs)
            self._build_lookup()

    @property
    def res(self) -> tuple[float, float]:
        """Resolution (x, y) that samples are served at, in CRS units."""
        return self._res

    @res.setter
    def res(self, new_res: float | tuple[float, float]) -> None:
        """Set the resolution (quietly, unlike torchgeo, which prints)."""
        if isinstance(new_res, int | float):
            new_res = (new_res, new_res)
        self._res = (float(new_res[0]), float(new_res[1]))

    def __getitem__(self, query: GeoSlice) -> dict[str, Any]:
        """Read the patch at *query*.

        Args:
            query: ``[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax:tres]`` in CRS units.

        Returns:
            sample with ``image``, ``crs`` and ``bounds``.

        Raises:
            IndexError: If *query* is not found in the index.
        """
        raster, window = self._direct_read_target(query)
        if raster is None:
            return super().__getitem__(query)
        image = torch.from_numpy(self._read_direct(raster, *window))
        sample: dict[str, Any] = {'crs': self._crs, 'bounds': query, 'image': image}
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def valid_mask(self, image: Tensor) -> Tensor:
        """Pixels holding data: finite in every band and not nodata in all bands.

        Args:
            image: (bands, height, width) sample image.

        Returns:
            bool tensor of shape (height, width).
        """
        valid = valid_pixels(image.numpy(force=True), self.nodata)
        return torch.from_numpy(valid).to(image.device)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without open file handles (DataLoader workers open their own)."""
        state = self.__dict__.copy()
        state['_handles'] = OrderedDict()
        return state

    # -- the direct path ---------------------------------------------------------

    def _build_lookup(self) -> None:
        """Precompute what the direct path needs, so a query costs no pandas call.

        File bounds become one array; each file is marked readable directly when it
        is north-up on the dataset's CRS (else None: it needs a warp).
        """
        self._boxes = np.array(
            [g.bounds for g in self.index.geometry], dtype=np.float64
        ).reshape(-1, 4)
        self._box_list = [tuple(box) for box in self._boxes.tolist()]
        # A file is isolated when no other file's interior meets its own (tiles that
        # share an edge are isolated).
        geometries = np.asarray(self.index.geometry.values)
        first, second = shapely.STRtree(geometries).query(
            geometries, predicate='intersects'
        )
        a, b = self._boxes[first], self._boxes[second]
        overlapping = (
            (first != second)
            & (a[:, 0] < b[:, 2])
            & (a[:, 2] > b[:, 0])
            & (a[:, 1] < b[:, 3])
            & (a[:, 3] > b[:, 1])
        )
        isolated = np.ones(len(geometries), dtype=bool)
        isolated[first[overlapping]] = False
        self._isolated = isolated.tolist()
        self._last_hit = -1
        self._crs = self.index.crs
        rasters = [self._rasters[path] for path in self.index.filepath]
        self._direct_files = [
            raster if raster.north_up and raster.crs == self._crs else None
            for raster in rasters
        ]
        self._timeless = bool(
            (self.index.index.left == self.mint).all()
            and (self.index.index.right == self.maxt).all()
        )

    def _direct_read_target(
        self, query: GeoSlice
    ) -> tuple[RasterFile | None, tuple[float, float, float, float, float, float]]:
        """The one file that can answer *query* by a windowed read, if any.

        Returns:
            the file (or None) and (left, bottom, right, top, xres, yres).
        """
        unresolved = (None, (0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
        if not (self._timeless and isinstance(query, tuple) and len(query) >= 2):
            return unresolved
        x, y = query[0], query[1]
        left, right, bottom, top = x.start, x.stop, y.start, y.stop
        if left is None or right is None or bottom is None or top is None:
            return unresolved
        xres = x.step if x.step is not None else self._res[0]
        yres = y.step if y.step is not None else self._res[1]
        window = (left, bottom, right, top, xres, yres)
        tolerance = 1e-6 * max(xres, yres)
        # Consecutive queries mostly fall in the same file: if it overlaps no other
        # file, a query inside it can touch no other one, and no search is needed.
        last = self._last_hit
        if last >= 0 and self._isolated[last]:
            box_left, box_bottom, box_right, box_top = self._box_list[last]
            if (
                left >= box_left - tolerance
                and right <= box_right + tolerance
                and bottom >= box_bottom - tolerance
                and top <= box_top + tolerance
            ):
                return self._direct_files[last], window
        boxes = self._boxes
        hits = np.flatnonzero(
            (boxes[:, 0] < right)
            & (boxes[:, 2] > left)
            & (boxes[:, 1] < top)
            & (boxes[:, 3] > bottom)
        )
        if len(hits) != 1:
            return None, window
        hit = int(hits[0])
        self._last_hit = hit
        box_left, box_bottom, box_right, box_top = self._box_list[hit]
        inside = (
            left >= box_left - tolerance
            and right <= box_right + tolerance
            and bottom >= box_bottom - tolerance
            and top <= box_top + tolerance
        )
        return (self._direct_files[hit] if inside else None), window

    def _read_direct(
        self,
        raster: RasterFile,
        left: float,
        bottom: float,
        right: float,
        top: float,
        xres: float,
        yres: float,
    ) -> npt.NDArray[np.float32]:
        """Read a window that lies inside *raster*, resampling only if grids differ."""
        height = round((top - bottom) / yres)
        width = round((right - left) / xres)
        if self.separate_files:
            files = dict(zip(self.all_bands, raster.band_paths, strict=True))
            layers = [
                self._read_window(
                    files[band],
                    [1],
                    left,
                    top,
                    right - left,
                    top - bottom,
                    height,
                    width,
                )
                for band in self.bands
            ]
            data = np.concatenate(layers)
        else:
            assert self.band_indexes is not None  # set unless separate_files
            data = self._read_window(
                raster.path, self.band_indexes, left, top, right - left, top - bottom,
                height, width,
            )  # fmt: skip
        return self._to_float(data)

    def _read_window(
        self,
        path: str,
        indexes: list[int],
        left: float,
        top: float,
        span_x: float,
        span_y: float,
        height: int,
        width: int,
    ) -> npt.NDArray[Any]:
        """Windowed read of bands *indexes* of one north-up file on the dataset CRS.

        The window is computed from the file's geotransform directly (rasterio's
        ``from_bounds`` costs more than a cached tile read).
        """
        src, origin_x, origin_y, pixel_x, pixel_y = self._open(path)
        col_off = (left - origin_x) / pixel_x
        row_off = (origin_y - top) / pixel_y
        cols, rows = span_x / pixel_x, span_y / pixel_y
        col, row = round(col_off), round(row_off)
        if (
            abs(col - col_off) < 1e-6
            and abs(row - row_off) < 1e-6
            and round(cols) == width
            and round(rows) == height
        ):
            return src.read(indexes, window=Window(col, row, width, height))
        return src.read(
            indexes,
            window=Window(col_off, row_off, cols, rows),
            out_shape=(len(indexes), height, width),
            resampling=self.resampling,
        )

    def _open(self, path: str) -> _OpenFile:
        """An open handle of *path*, cached per process (forked workers reopen)."""
        if self._handles_pid != os.getpid():
            self._handles = OrderedDict()
            self._handles_pid = os.getpid()
        handle = self._handles.get(path)
        if handle is None:
            src = rasterio.open(path)
            transform = src.transform
            handle = _OpenFile(src, transform.c, transform.f, transform.a, -transform.e)
            if self.cache:
                self._handles[path] = handle
                if len(self._handles) > _MAX_OPEN_FILES:
                    self._handles.popitem(last=False)[1].src.close()
        else:
            self._handles.move_to_end(path)
        return handle

    def _to_float(self, data: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Stored samples as float32, SAR converted to its backscatter scale."""
        if self.sar is not None:
            return self.sar.apply(data, self.nodata)
        return data.astype(np.float32, copy=False)

    # -- torchgeo's general path, adapted ----------------------------------------

    def _update_filepath(self, band: str, filepath: str) -> str:
        """The file holding *band* of the item indexed by *filepath*."""
        raster = self._rasters[filepath]
        return raster.band_paths[self.all_bands.index(band)]

    def _merge_files(
        self,
        filepaths: Sequence[str],
        query: GeoSlice,
        band_indexes: Sequence[int] | None = None,
    ) -> Tensor:
        """Merge files as torchgeo does, filling with the group's nodata value."""
        if self.cache:
            handles = [self._cached_load_warp_file(fp) for fp in filepaths]
        else:
            handles = [self._load_warp_file(fp) for fp in filepaths]
        x, y, _ = self._disambiguate_slice(query)
        dest, _ = rasterio.merge.merge(
            handles,
            bounds=(x.start, y.start, x.stop, y.stop),
            res=(x.step, y.step),
            indexes=band_indexes,
            nodata=self.nodata,
            resampling=self.resampling,
        )
        return torch.from_numpy(self._to_float(dest))
