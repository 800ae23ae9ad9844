"""Vector labels: polygons, boxes and points with a class column, in any CRS.

Label files (GeoPackage, GeoJSON, Shapefile, FlatGeobuf, GeoParquet, or CSV with
``x``/``y``, ``lon``/``lat`` or ``wkt`` columns) are read once, checked (CRS, class
column, blank classes), reprojected to the images' CRS and indexed; chips are then
rasterised or boxed on the fly from memory, unlike torchgeo's
:class:`~torchgeo.datasets.VectorDataset`, which reads the file on every sample.
"""

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio.features
import shapely
from pyproj.exceptions import CRSError, ProjError
from rasterio.crs import CRS
from rasterio.transform import from_bounds

from ...errors import LabelError

__all__ = (
    'CLASS_COLUMNS',
    'SPLIT_COLUMNS',
    'TABLE_EXTENSIONS',
    'VECTOR_EXTENSIONS',
    'VectorLabels',
    'class_column_values',
    'find_column',
    'read_table',
    'reproject_labels',
    'resolve_column',
)

logger = logging.getLogger(__name__)

#: Extensions of vector label files.
VECTOR_EXTENSIONS = frozenset({
    '.gpkg', '.geojson', '.json', '.shp', '.fgb', '.kml', '.gml', '.parquet',
    '.geoparquet', '.sqlite',
})  # fmt: skip

#: Extensions of plain tables (chip paths, or point coordinates).
TABLE_EXTENSIONS = frozenset({'.csv', '.tsv', '.txt'})

#: Coordinate column pairs of point tables, and whether they are lon/lat.
_COORDINATE_COLUMNS = (
    ('x', 'y', False), ('easting', 'northing', False), ('lon', 'lat', True),
    ('lng', 'lat', True), ('long', 'lat', True), ('longitude', 'latitude', True),
)  # fmt: skip

#: Columns that may hold geometries as WKT in a plain table.
_WKT_COLUMNS = ('wkt', 'geometry', 'geom', 'the_geom')

#: Likely names of the class column, tried when none is given.
CLASS_COLUMNS = ('class', 'label', 'class_name', 'classname', 'category', 'class_id')

#: Likely names of a split column.
SPLIT_COLUMNS = ('split', 'subset', 'set')


def find_column(
    frame: pd.DataFrame, given: str | None, candidates: Sequence[str]
) -> str | None:
    """*given*, else the first column whose lower-cased name is a candidate."""
    if given is not None:
        return given
    lower = {str(c).lower(): str(c) for c in frame.columns}
    for candidate in candidates:
        if candidate in lower:
            return lower[candidate]
    return None


def read_table(
    path: str | os.PathLike[str],
    layer: str | int | None = None,
    crs: CRS | str | None = None,
) -> pd.DataFrame:
    """Read a label table: a vector file, or a CSV with or without coordinates.

    A CSV with coordinate columns (``x``/``y``, ``easting``/``northing``,
    ``lon``/``lat``, ``longitude``/``latitude``) or a WKT column becomes a
    GeoDataFrame; lon/lat columns are EPSG:4326 unless *crs* says otherwise, other
    coordinates take *crs* (None: no CRS, caught later). A CSV without either stays
    a plain DataFrame (a table of chip paths), as does a GeoPackage table with no
    geometry.

    Args:
        path: the file.
        layer: layer of a multi-layer vector file (default: the first).
        crs: CRS of coordinates that carry none (CSV, Shapefile without ``.prj``).

    Returns:
        the table.

    Raises:
        LabelError: If the file cannot be read as a table.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in TABLE_EXTENSIONS:
            frame = pd.read_csv(path, sep=None, engine='python', encoding='utf-8-sig')
            return _geometry_from_columns(frame, crs, str(path))
        if suffix in ('.parquet', '.geoparquet'):
            try:
                table: pd.DataFrame = gpd.read_parquet(path)
            except ValueError:
                table = pd.read_parquet(path)
        else:
            table = gpd.read_file(path, layer=layer)
    except (OSError, ValueError, RuntimeError) as error:
        msg = f'cannot read labels {path}: {error}'
        raise LabelError(msg) from None
    if isinstance(table, gpd.GeoDataFrame):
        if table.geometry.isna().all() and 'geometry' in table:
            return pd.DataFrame(table.drop(columns='geometry'))
        if table.crs is None and crs is not None:
            table = table.set_crs(crs)
    return table


def _geometry_from_columns(
    frame: pd.DataFrame, crs: CRS | str | None, source: str
) -> pd.DataFrame:
    """A GeoDataFrame from coordinate or WKT columns, else *frame* unchanged."""
    lower = {str(c).strip().lower(): c for c in frame.columns}
    for x_name, y_name, lonlat in _COORDINATE_COLUMNS:
        if x_name in lower and y_name in lower:
            x = pd.to_numeric(frame[lower[x_name]], errors='coerce')
            y = pd.to_numeric(frame[lower[y_name]], errors='coerce')
            if x.isna().any() or y.isna().any():
                rows = list(frame.index[x.isna() | y.isna()][:5])
                msg = f'{source}: rows {rows} have no numeric {x_name}/{y_name}'
                raise LabelError(msg)
            points = gpd.points_from_xy(x, y)
            point_crs = crs if crs is not None else ('EPSG:4326' if lonlat else None)
            rest = frame.drop(columns=[lower[x_name], lower[y_name]])
            return gpd.GeoDataFrame(rest, geometry=points, crs=point_crs)
    for name in _WKT_COLUMNS:
        if name in lower:
            geometry = gpd.GeoSeries.from_wkt(frame[lower[name]].astype(str))
            rest = frame.drop(columns=[lower[name]])
            return gpd.GeoDataFrame(rest, geometry=geometry, crs=crs)
    return frame


def resolve_column(
    frame: pd.DataFrame, column: str, source: str, what: str = 'class'
) -> str:
    """The name of *column* in *frame*, matched case-insensitively if need be.

    Raises:
        LabelError: If the column is missing; the message lists the columns there
            are.
    """
    if column in frame.columns:
        return column
    geometry = getattr(frame, '_geometry_column_name', None)
    columns = [str(c) for c in frame.columns if c != geometry]
    folded = [c for c in columns if c.lower() == column.lower()]
    if len(folded) == 1:
        return folded[0]
    msg = (
        f'{what} column {column!r} is not in {source}; its columns are '
        f'{", ".join(columns) or "(none)"}'
    )
    raise LabelError(msg)


def class_column_values(
    frame: pd.DataFrame, column: str, source: str, what: str = 'class'
) -> pd.Series:
    """The class (or split) column of a label table, checked.

    Args:
        frame: the table.
        column: the column's name (matched case-insensitively if need be).
        source: the file, for messages.
        what: what the column holds, for messages.

    Returns:
        the column.

    Raises:
        LabelError: If the column is missing (the message lists the columns
            there are) or some rows leave it empty.
    """
    column = resolve_column(frame, column, source, what)
    values = frame[column]
    blank = values.isna() | (values.astype(str).str.strip() == '')
    if blank.any():
        rows = list(frame.index[blank][:10])
        msg = (
            f'{int(blank.sum())} rows of {source} have an empty {what} in column '
            f'{column!r} (rows {rows}); fill in their {what} or remove them'
        )
        raise LabelError(msg)
    return values


def reproject_labels(
    frame: gpd.GeoDataFrame,
    crs: CRS,
    image_boxes: Sequence[shapely.Geometry],
    source: str,
) -> gpd.GeoDataFrame:
    """Labels in the images' CRS, keeping those that touch an image.

    Args:
        frame: labels with their CRS.
        crs: the images' CRS.
        image_boxes: footprints of the images in *crs*.
        source: the label file(s), for messages.

    Returns:
        the labels in *crs* that intersect an image (empty geometries dropped).

    Raises:
        LabelError: If the labels have no CRS, cannot be transformed to *crs*, or
            lie outside every image.
    """
    empty = frame.geometry.isna() | frame.geometry.is_empty
    if empty.any():
        logger.warning('%s: dropping %d features without geometry', source, empty.sum())
        frame = frame[~empty]
    if frame.empty:
        msg = f'{source} holds no feature with a geometry'
        raise LabelError(msg)
    if frame.crs is None:
        msg = (
            f'{source} has no CRS, so it cannot be matched to the images '
            f'({crs.to_string()}); give the file one (e.g. `ogr2ogr -a_srs EPSG:XXXX '
            'out.gpkg in.shp`, or a .prj beside a Shapefile)'
        )
        raise LabelError(msg)
    native_bounds = frame.total_bounds
    try:
        moved = frame.to_crs(crs)
        bounds = moved.total_bounds
    except (CRSError, ProjError, ValueError) as error:
        msg = f'{source} cannot be transformed from {frame.crs} to {crs}: {error}'
        raise LabelError(msg) from None
    if not np.isfinite(bounds).all():
        msg = (
            f'{source} cannot be transformed from {frame.crs.to_string()} to the '
            f"images' {crs.to_string()}: coordinates {_fmt(native_bounds)} give "
            'infinite values; the file probably declares the wrong CRS (projected '
            'metres in a file that says EPSG:4326?)'
        )
        raise LabelError(msg)
    footprint = shapely.union_all(np.asarray(image_boxes, dtype=object))
    inside = moved.geometry.intersects(footprint).to_numpy()
    if not inside.any():
        images = shapely.bounds(footprint)
        msg = (
            f'{source}: no label lies on an image. Labels span {_fmt(bounds)} in '
            f'{crs.to_string()} (from {_fmt(native_bounds)} in '
            f'{frame.crs.to_string()}); images span {_fmt(images)}. Check that the '
            'labels belong to these images and that their CRS is declared right '
            '(swapped lat/lon?)'
        )
        raise LabelError(msg)
    if not inside.all():
        logger.warning(
            '%s: %d of %d features lie outside every image and are ignored',
            source,
            int((~inside).sum()),
            len(inside),
        )
    return moved[inside]


def _fmt(bounds: npt.ArrayLike) -> str:
    """Bounds as ``(left, bottom, right, top)`` with sensible precision."""
    return '(' + ', '.join(f'{v:.6g}' for v in np.asarray(bounds).tolist()) + ')'


def _chip_pixel_boxes(
    boxes: npt.NDArray[np.float64],
    bounds: tuple[float, float, float, float],
    shape: tuple[int, int],
) -> npt.NDArray[np.float64]:
    """Map boxes as pixel boxes of a chip.

    Args:
        boxes: (N, 4) ``minx, miny, maxx, maxy`` in the chip's CRS.
        bounds: (left, bottom, right, top) of the chip.
        shape: (height, width) of the chip.

    Returns:
        (N, 4) ``x0, y0, x1, y1`` in pixels, (0, 0) the chip's top-left corner.
    """
    left, bottom, right, top = bounds
    boxes = boxes.reshape(-1, 4)
    xres = (right - left) / shape[1]
    yres = (top - bottom) / shape[0]
    return np.stack(
        [
            (boxes[:, 0] - left) / xres,
            (top - boxes[:, 3]) / yres,
            (boxes[:, 2] - left) / xres,
            (top - boxes[:, 1]) / yres,
        ],
        axis=1,
    ).reshape(-1, 4)


class VectorLabels:
    """Labelled geometries in the images' CRS, rasterised or boxed per chip.

    Attributes:
        geometries: shapely geometries in *crs*.
        classes: class index of each geometry.
        crs: their CRS.
    """

    def __init__(
        self,
        geometries: Sequence[shapely.Geometry] | npt.NDArray[Any],
        classes: npt.ArrayLike,
        crs: CRS,
    ) -> None:
        """Index geometries.

        Args:
            geometries: the labels' geometries, in *crs*.
            classes: class index of each geometry.
            crs: the images' CRS.

        .. versionadded:: 0.1
        """
        self.geometries = np.asarray(geometries, dtype=object)
        self.classes = np.asarray(classes, dtype=np.int64)
        self.crs = crs
        self.tree = shapely.STRtree(self.geometries)

    def __len__(self) -> int:
        """Number of geometries."""
        return len(self.geometries)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of all geometries."""
        left, bottom, right, top = shapely.total_bounds(self.geometries).tolist()
        return (left, bottom, right, top)

    def most_in_window(self, width: float, height: float) -> int:
        """Most objects whose centre lies in one window of *width* x *height*.

        Windows are placed on a grid of half their size (so any window holds at
        most what this counts for the four grid windows around it; the count is a
        close estimate of the most over all placements). Prediction sizes a
        detector's proposals from it (issue 16).

        Args:
            width: window width in :attr:`crs` units.
            height: window height in :attr:`crs` units.

        Returns:
            the count (0 without objects).

        .. versionadded:: 0.1
        """
        if not len(self.geometries):
            return 0
        centres = shapely.get_coordinates(shapely.centroid(self.geometries))
        left, top = centres[:, 0].min(), centres[:, 1].max()
        cols = np.floor((centres[:, 0] - left) / (width / 2)).astype(np.int64)
        rows = np.floor((top - centres[:, 1]) / (height / 2)).astype(np.int64)
        cells = np.zeros((rows.max() + 2, cols.max() + 2), dtype=np.int64)
        np.add.at(cells, (rows, cols), 1)
        windows = cells[:-1, :-1] + cells[1:, :-1] + cells[:-1, 1:] + cells[1:, 1:]
        return int(windows.max())

    def _hits(self, bounds: tuple[float, float, float, float]) -> npt.NDArray[np.intp]:
        """Indices of geometries that intersect *bounds*, in file order."""
        hits = self.tree.query(shapely.box(*bounds), predicate='intersects')
        return np.sort(hits)

    def mask(
        self,
        bounds: tuple[float, float, float, float],
        shape: tuple[int, int],
        fill: int,
        all_touched: bool = False,
    ) -> npt.NDArray[np.int64]:
        """Class index of each pixel of a chip; later features paint over earlier.

        Args:
            bounds: (left, bottom, right, top) of the chip in :attr:`crs`.
            shape: (height, width) of the chip.
            fill: value of pixels no geometry covers (background or ignore index).
            all_touched: paint every pixel a geometry touches, not only those whose
                centre it covers (for thin lines).

        Returns:
            int64 (height, width) array.
        """
        hits = self._hits(bounds)
        if not len(hits):
            return np.full(shape, fill, dtype=np.int64)
        transform = from_bounds(*bounds, width=shape[1], height=shape[0])
        shapes = zip(self.geometries[hits], self.classes[hits].tolist(), strict=True)
        out = rasterio.features.rasterize(
            shapes,
            out_shape=shape,
            transform=transform,
            fill=fill,
            all_touched=all_touched,
            dtype='int32',
        )
        mask: npt.NDArray[np.int64] = np.asarray(out, dtype=np.int64)
        return mask

    def boxes(
        self,
        bounds: tuple[float, float, float, float],
        shape: tuple[int, int],
        min_visible: float = 0.0,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Pixel boxes of the geometries that overlap a chip, clipped to it.

        A geometry is clipped to the chip before its box is taken, so a polygon cut
        by the chip edge gets the box of its visible part. Geometries that only
        touch the chip (no area inside) are left out, and so are polygons with less
        than *min_visible* of their area inside it.

        Args:
            bounds: (left, bottom, right, top) of the chip in :attr:`crs`.
            shape: (height, width) of the chip.
            min_visible: least share of a polygon's area inside the chip (0: any
                part; geometries without area are kept).

        Returns:
            float32 (N, 4) ``x0, y0, x1, y1`` in pixels (0, 0 the chip's top-left
            corner), and the (N,) class indices.
        """
        return self.chip_boxes(self._hits(bounds), bounds, shape, min_visible)

    def chip_boxes(
        self,
        candidates: npt.NDArray[np.intp],
        bounds: tuple[float, float, float, float],
        shape: tuple[int, int],
        min_visible: float = 0.0,
        candidate_bounds: npt.NDArray[np.float64] | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """:meth:`boxes` of a chip, from geometries that may meet it.

        Geometries whose bounds lie inside the chip keep their bounds (clipping
        leaves them whole); only those the chip edge crosses are clipped. Held
        scene cells call this with the candidates they kept for the cell.

        Args:
            candidates: indices of the geometries that may meet the chip, in file
                order (a superset of those that do is fine).
            bounds: (left, bottom, right, top) of the chip in :attr:`crs`.
            shape: (height, width) of the chip.
            min_visible: as in :meth:`boxes`.
            candidate_bounds: (N, 4) bounds of the candidates, if known.

        Returns:
            as :meth:`boxes`.

        .. versionadded:: 0.2
        """
        geometries = self.geometries[candidates]
        found = (
            shapely.bounds(geometries).reshape(-1, 4)
            if candidate_bounds is None
            else candidate_bounds.copy()
        )
        left, bottom, right, top = bounds
        cut = ~(
            (found[:, 0] > left)
            & (found[:, 2] < right)
            & (found[:, 1] > bottom)
            & (found[:, 3] < top)
        )
        empty = np.zeros(len(candidates), dtype=bool)
        if cut.any():
            clipped = shapely.clip_by_rect(geometries[cut], *bounds)
            found[cut] = shapely.bounds(clipped).reshape(-1, 4)
            empty[cut] = shapely.is_empty(clipped)
            if min_visible > 0:  # too little of it inside: as if empty
                whole = shapely.area(geometries[cut])
                empty[cut] |= shapely.area(clipped) < min_visible * whole
        pixel = _chip_pixel_boxes(found, bounds, shape)
        keep = ~empty & (pixel[:, 2] > pixel[:, 0]) & (pixel[:, 3] > pixel[:, 1])
        return pixel[keep].astype(np.float32), self.classes[candidates][keep]
