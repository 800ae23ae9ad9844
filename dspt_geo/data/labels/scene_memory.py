"""Scene cells read once and held in memory; chips on their pixel grid are slices.

A :class:`~dspt_geo.data.labels.SceneDataset` draws every chip inside one cell of
its split, on the cell's pixel grid (random chips, and grid windows moved inside
their cell). When the cells fit a memory budget, each is read once through the
dataset's own read (one query over the cell's bounds: mosaicking, band selection,
SAR conversion and nodata as for a chip), its segmentation mask rasterised once,
and its vector labels' candidates and bounds kept; a chip is then an array slice
(and, for detection, its boxes from the cell's candidates by the same clipping
rule as :meth:`~dspt_geo.data.labels.VectorLabels.boxes`) instead of a file read,
a rasterisation and a spatial query per chip (issue 15: on a small scene these
took CPU time from the training step).

A cell is held only where a slice equals the chip read exactly: its images are
read directly from one file on their pixel grid, and its label rasters lie on the
same grid (no merge, resampling or warp, whose result could depend on the
window; see :func:`on_cell_grid`). Queries off the cached grid, and datasets that
do not fit, are read from the files as before.
"""

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import shapely
import torch
from geopandas import GeoDataFrame
from torch import Tensor

from ..dataset import SensorDataset
from .rasters import RasterLabels
from .vectors import VectorLabels

__all__ = ('HeldCell', 'SceneMemory', 'cell_bytes', 'on_cell_grid')

Bounds = tuple[float, float, float, float]

#: Grid mismatch, in pixels, below which a query counts as on a cell's grid.
_TOLERANCE = 1e-6


def _on_grid(
    offset_x: float,
    offset_y: float,
    res: tuple[float, float],
    file_res: tuple[float, float],
) -> bool:
    """Whether a file of *file_res* whose corner lies *offset* away shares the grid."""
    if not (
        math.isclose(file_res[0], res[0], rel_tol=1e-9)
        and math.isclose(file_res[1], res[1], rel_tol=1e-9)
    ):
        return False
    cols, rows = offset_x / res[0], offset_y / res[1]
    return abs(cols - round(cols)) < _TOLERANCE and abs(rows - round(rows)) < _TOLERANCE


def on_cell_grid(
    images: SensorDataset, labels: RasterLabels | VectorLabels, bounds: Bounds
) -> bool:
    """Whether a cell read once and sliced gives exactly each chip's read.

    The images must answer the cell, and so every chip in it, with the data
    layer's direct read of one file on their pixel grid: a window of whole pixels.
    Reads through torchgeo's merge (files that overlap, dates, warps) are not
    held: their windows are placed by float arithmetic and resampled, so a
    chip's values may differ from the cell's by rounding. Label rasters must lie
    on the same grid, unwarped.

    Args:
        images: the images.
        labels: the labels (label rasters are checked too).
        bounds: the cell's (left, bottom, right, top) in the images' CRS.

    Returns:
        whether the cell can be held.
    """
    if images.transforms is not None:
        return False
    left, bottom, right, top = bounds
    res = images.res
    query = (
        slice(left, right, res[0]),
        slice(bottom, top, res[1]),
        slice(images.mint, images.maxt),
    )
    raster, _ = images._direct_read_target(query)
    if raster is None:
        return False
    if not _on_grid(raster.bounds[0] - left, top - raster.bounds[3], res, raster.res):
        return False
    if isinstance(labels, RasterLabels):
        for path in _touching(labels.index, bounds):
            src = labels._open(path)
            t = src.transform
            if src.crs != images.crs or t.b or t.d:
                return False
            if not _on_grid(t.c - left, top - t.f, res, (t.a, -t.e)):
                return False
    return True


def _touching(index: GeoDataFrame, bounds: Bounds) -> list[str]:
    """Paths of an index's files whose footprint overlaps *bounds*."""
    left, bottom, right, top = bounds
    boxes = np.array([g.bounds for g in index.geometry], dtype=np.float64).reshape(
        -1, 4
    )
    hits = np.flatnonzero(
        (boxes[:, 0] < right)
        & (boxes[:, 2] > left)
        & (boxes[:, 1] < top)
        & (boxes[:, 3] > bottom)
    )
    return [str(index.filepath.iloc[i]) for i in hits]


def cell_bytes(bounds: Bounds, res: tuple[float, float], bands: int, mask: bool) -> int:
    """Bytes a held cell takes: float32 image, bool valid, int64 mask if any."""
    left, bottom, right, top = bounds
    pixels = round((right - left) / res[0]) * round((top - bottom) / res[1])
    return pixels * (4 * bands + 1 + (8 if mask else 0))


class HeldCell(NamedTuple):
    """One cell read once.

    Attributes:
        bounds: (left, bottom, right, top) in the images' CRS.
        image: float32 (C, H, W) as the dataset reads it.
        valid: bool (H, W).
        mask: int64 (H, W) segmentation mask (ignore where invalid), or None.
        objects: detection: indices of the vector labels meeting the cell, in
            file order, or None.
        object_bounds: (N, 4) bounds of those labels in the images' CRS.
    """

    bounds: Bounds
    image: npt.NDArray[np.float32]
    valid: npt.NDArray[np.bool_]
    mask: npt.NDArray[np.int64] | None
    objects: npt.NDArray[np.intp] | None
    object_bounds: npt.NDArray[np.float64] | None


class SceneMemory:
    """Held cells of one scene dataset, serving chips on their grid as slices."""

    def __init__(
        self,
        cells: Sequence[HeldCell],
        res: tuple[float, float],
        labels: VectorLabels | None = None,
        min_visible: float = 0.0,
    ) -> None:
        """Hold *cells*.

        Args:
            cells: the cells, read once.
            res: the images' pixel size (x, y).
            labels: detection: the vector labels the boxes are cut from.
            min_visible: detection: least share of a polygon's area inside a chip
                (as :meth:`VectorLabels.boxes`).
        """
        self.cells = list(cells)
        self.res = res
        self.labels = labels
        self.min_visible = min_visible
        self._boxes = np.array([c.bounds for c in self.cells], np.float64).reshape(
            -1, 4
        )

    @classmethod
    def read(
        cls,
        bounds: Sequence[Bounds],
        res: tuple[float, float],
        read: Callable[[Bounds], dict[str, Tensor]],
        labels: VectorLabels | None = None,
        min_visible: float = 0.0,
    ) -> 'SceneMemory':
        """Read each cell once with *read* (the dataset's chip read).

        Args:
            bounds: the cells' bounds.
            res: the images' pixel size.
            read: reads a sample at bounds (``image``, ``valid``, ``mask``).
            labels: detection: the vector labels (their candidates per cell are
                kept; the cell's own boxes are not used).
            min_visible: detection: least share of a polygon's area inside a chip.

        Returns:
            the memory.
        """
        cells = []
        for box in bounds:
            sample = read(box)
            mask = sample.get('mask') if labels is None else None
            objects = object_bounds = None
            if labels is not None:
                # A pixel wider than the cell: chips on its edge may cross it by
                # rounding.
                wider = shapely.box(
                    box[0] - res[0], box[1] - res[1], box[2] + res[0], box[3] + res[1]
                )
                objects = np.sort(labels.tree.query(wider, predicate='intersects'))
                object_bounds = shapely.bounds(labels.geometries[objects]).reshape(
                    -1, 4
                )
            cells.append(
                HeldCell(
                    box,
                    sample['image'].numpy(),
                    sample['valid'].numpy(),
                    None if mask is None else mask.numpy(),
                    objects,
                    object_bounds,
                )
            )
        return cls(cells, res, labels, min_visible)

    @property
    def nbytes(self) -> int:
        """Bytes of the held arrays."""
        return sum(
            c.image.nbytes + c.valid.nbytes + (0 if c.mask is None else c.mask.nbytes)
            for c in self.cells
        )

    def sample(self, bounds: Bounds) -> dict[str, Tensor] | None:
        """The chip at *bounds* from memory, or None when no cell holds it on grid.

        Args:
            bounds: (left, bottom, right, top) of the chip in the images' CRS.

        Returns:
            ``image``, ``valid`` and ``mask`` or ``boxes`` and ``labels``, equal to
            the dataset's read of the files (copies: callers may edit them).
        """
        left, bottom, right, top = bounds
        xres, yres = self.res
        tol_x, tol_y = _TOLERANCE * xres, _TOLERANCE * yres
        boxes = self._boxes
        hits = np.flatnonzero(
            (boxes[:, 0] <= left + tol_x)
            & (boxes[:, 2] >= right - tol_x)
            & (boxes[:, 1] <= bottom + tol_y)
            & (boxes[:, 3] >= top - tol_y)
        )
        if not len(hits):
            return None
        cell = self.cells[int(hits[0])]
        col_f = (left - cell.bounds[0]) / xres
        row_f = (cell.bounds[3] - top) / yres
        col, row = round(col_f), round(row_f)
        if abs(col - col_f) > _TOLERANCE or abs(row - row_f) > _TOLERANCE:
            return None
        width, height = round((right - left) / xres), round((top - bottom) / yres)
        rows, cols = slice(row, row + height), slice(col, col + width)
        sample = {
            'image': torch.from_numpy(cell.image[:, rows, cols].copy()),
            'valid': torch.from_numpy(cell.valid[rows, cols].copy()),
        }
        if cell.mask is not None:
            sample['mask'] = torch.from_numpy(cell.mask[rows, cols].copy())
        if cell.objects is not None and cell.object_bounds is not None:
            chip_boxes, classes = self._boxes_of(cell, bounds, (height, width))
            sample['boxes'] = torch.from_numpy(chip_boxes)
            sample['labels'] = torch.from_numpy(classes)
        return sample

    def _boxes_of(
        self, cell: HeldCell, bounds: Bounds, shape: tuple[int, int]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Pixel boxes and classes of a chip, by :meth:`VectorLabels.chip_boxes`.

        The candidates are the cell's labels whose bounds meet the chip's.
        """
        assert self.labels is not None and cell.objects is not None  # detection
        assert cell.object_bounds is not None
        left, bottom, right, top = bounds
        ob = cell.object_bounds
        near = (
            (ob[:, 0] <= right)
            & (ob[:, 2] >= left)
            & (ob[:, 1] <= top)
            & (ob[:, 3] >= bottom)
        )
        return self.labels.chip_boxes(
            cell.objects[near], bounds, shape, self.min_visible, ob[near]
        )
