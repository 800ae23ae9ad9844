"""Labelled chips of georeferenced scenes: rasters plus label rasters or vectors.

Images are a :class:`~dspt_geo.data.SensorDataset` (the data layer's fast reads and
valid masks); labels are :class:`~dspt_geo.data.labels.RasterLabels` or
:class:`~dspt_geo.data.labels.VectorLabels` on the images' CRS.

:class:`SceneDataset` is iterable: it draws chip windows with the data layer's
samplers (:class:`~dspt_geo.data.sampling.DistributedRandomGeoSampler` for
training, :class:`~dspt_geo.data.sampling.DistributedGridGeoSampler` for
validation), which shard across DDP ranks and DataLoader workers, and it skips
chips that are mostly nodata or carry no label, which a map-style dataset cannot.
A split is a set of *cells*: image footprints cut along block edges
(:mod:`~dspt_geo.data.labels.split`); every chip lies inside one cell, so no chip
straddles a training and a validation block.

:class:`LocationClassificationDataset` is map-style: one chip centred on each
labelled point (or polygon).
"""

import copy
import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
import torch
from geopandas import GeoDataFrame
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset

from ...errors import EmptyRasterError, LabelError
from ..dataset import SensorDataset
from ..sampling import (
    DistributedGridGeoSampler,
    DistributedRandomGeoSampler,
    process_shard,
)
from .classes import ClassTable
from .rasters import RasterLabels
from .scene_memory import SceneMemory, cell_bytes, on_cell_grid
from .split import block_edges
from .vectors import VectorLabels

__all__ = (
    'LocationClassificationDataset',
    'SceneDataset',
    'fits_chip',
    'scene_cells',
    'scene_pieces',
)

logger = logging.getLogger(__name__)

Bounds = tuple[float, float, float, float]


def _snap(edge: float, origin: float, res: float) -> float:
    """*edge* moved to the nearest pixel edge of a grid starting at *origin*."""
    return origin + round((edge - origin) / res) * res


def scene_pieces(
    images: SensorDataset,
    block_size: float | None,
    labels_footprints: Sequence[shapely.Geometry] | None = None,
    files: set[str] | None = None,
) -> list[tuple[str, pd.Interval, tuple[int, int] | None, shapely.Geometry]]:
    """Image footprints cut along block edges (and to where labels exist).

    Block edges are snapped to each file's pixel grid, so chips drawn inside a piece
    need no resampling.

    Args:
        images: the images.
        block_size: block side in CRS units; None: footprints stay whole.
        labels_footprints: where labels exist (label rasters' footprints in the
            images' CRS); pieces are cut to them. None: everywhere.
        files: keep only these image files (a folder split); None: all.

    Returns:
        (file path, time interval, block key or None, box) per piece; the block
        grid starts at the top-left corner of all images.
    """
    xres, yres = images.res
    origin_x, _, _, origin_y = images.index.total_bounds.tolist()
    out: list[tuple[str, pd.Interval, tuple[int, int] | None, shapely.Geometry]] = []
    index = images.index
    for filepath, interval, geometry in zip(
        index.filepath, index.index, index.geometry, strict=True
    ):
        if files is not None and filepath not in files:
            continue
        left, bottom, right, top = geometry.bounds
        pieces: list[tuple[tuple[int, int] | None, Bounds]] = []
        if block_size is None:
            pieces.append((None, (left, bottom, right, top)))
        else:
            xs = block_edges(left, right, block_size, origin_x)
            ys = block_edges(bottom, top, block_size, origin_y)
            for x0, x1 in itertools.pairwise(xs):
                for y0, y1 in itertools.pairwise(ys):
                    block = (
                        math.floor(((x0 + x1) / 2 - origin_x) / block_size),
                        math.floor(((y0 + y1) / 2 - origin_y) / block_size),
                    )
                    pieces.append((block, (x0, y0, x1, y1)))
        for key, piece in pieces:
            cell = shapely.box(*piece)
            for footprint in labels_footprints or [None]:
                part = cell if footprint is None else cell.intersection(footprint)
                if part.is_empty or part.area <= 0:
                    continue
                l0, b0, r0, t0 = part.bounds
                part = shapely.box(
                    _snap(l0, left, xres),
                    _snap(b0, top, yres),
                    _snap(r0, left, xres),
                    _snap(t0, top, yres),
                )
                if part.area > 0:
                    out.append((filepath, interval, key, part))
    return out


def fits_chip(box: shapely.Geometry, size: int, res: tuple[float, float]) -> bool:
    """Whether a box holds a *size* x *size* pixel chip."""
    left, bottom, right, top = box.bounds
    wide = (right - left) >= (size - 1e-6) * res[0]
    return bool(wide and (top - bottom) >= (size - 1e-6) * res[1])


def scene_cells(
    pieces: Sequence[tuple[str, pd.Interval, tuple[int, int] | None, shapely.Geometry]],
    crs: Any,
    keep: Callable[[tuple[int, int] | None], bool] | None = None,
) -> GeoDataFrame:
    """An index like ``SensorDataset.index`` of the pieces one split keeps.

    Args:
        pieces: from :func:`scene_pieces`.
        crs: the images' CRS.
        keep: whether the split keeps a piece of a block key (None: all).

    Returns:
        file path, time interval and box of each kept piece.
    """
    rows = [p for p in pieces if keep is None or keep(p[2])]
    times = pd.IntervalIndex([r[1] for r in rows], name='datetime', closed='both')
    return GeoDataFrame(
        {'filepath': [r[0] for r in rows]},
        index=times,
        geometry=[r[3] for r in rows],
        crs=crs,
    )


class SceneDataset(IterableDataset[dict[str, Tensor]]):
    """Chips of images with segmentation masks or detection boxes.

    Samples (segmentation): ``image`` float32 (C, H, W) stored values, ``mask``
    int64 (H, W) with ``class_table.ignore_index`` where there is no label or no
    image data, ``valid`` bool (H, W). Detection: ``image``, ``boxes`` float32
    (N, 4) ``x0, y0, x1, y1`` in chip pixels, ``labels`` int64 (N,), ``valid``.

    Use with ``DataLoader(dataset, batch_size=B, num_workers=N,
    collate_fn=collate_labelled)``; every process (DDP rank x worker) yields its
    share of the epoch.
    """

    def __init__(
        self,
        images: SensorDataset,
        labels: RasterLabels | VectorLabels,
        class_table: ClassTable,
        task: Literal['segment', 'detect'],
        size: int,
        cells: GeoDataFrame | None = None,
        sampling: Literal['random', 'grid'] = 'random',
        length: int | None = None,
        stride: int | None = None,
        min_valid_fraction: float = 0.5,
        positive_fraction: float = 0.0,
        min_object_visible: float = 0.5,
        background: int | None = None,
        seed: int = 0,
        max_rejections: int = 500,
        transforms: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
    ) -> None:
        """Initialise the dataset.

        Args:
            images: the images.
            labels: label rasters or vectors on the images' CRS.
            class_table: the classes.
            task: ``'segment'`` or ``'detect'``.
            size: chip size in pixels.
            cells: where to draw chips (:func:`scene_cells`); default: the images'
                footprints.
            sampling: ``'random'`` (training) or ``'grid'`` (validation, testing:
                every window once).
            length: chips per epoch over all processes, for random sampling
                (default: as many as tile the cells without overlap).
            stride: grid step in pixels (default: *size*, no overlap).
            min_valid_fraction: chips with a smaller share of valid image pixels
                are skipped.
            positive_fraction: share of random chips that must hold a labelled
                object (a box, or a pixel of a class other than *background*); the
                rest are drawn freely.
            min_object_visible: detection, random chips: objects with a smaller
                share of their area inside the chip are left out (background),
                as :func:`~dspt_geo.data.transforms.scale_crop` leaves out the
                boxes its crop cuts; grid chips keep every object (evaluation
                decides by the box centre). Without it, most boxes of objects
                half a chip wide are slivers of them.
            background: class index of the background (segmentation from vectors),
                which does not make a chip positive.
            seed: base seed of the draw.
            max_rejections: skipped draws in a row after which the data is deemed
                unusable.
            transforms: function applied to each sample.

        Raises:
            LabelError: If *task* does not fit *labels* or no cell fits a chip.
            ValueError: If *sampling* or a fraction is invalid.

        .. versionadded:: 0.1
        """
        if task == 'detect' and not isinstance(labels, VectorLabels):
            msg = 'detection needs vector labels (polygons or boxes), not label rasters'
            raise LabelError(msg)
        if sampling not in ('random', 'grid'):
            msg = f"sampling must be 'random' or 'grid', got {sampling!r}"
            raise ValueError(msg)
        fractions = (positive_fraction, min_valid_fraction, min_object_visible)
        if not all(0 <= fraction <= 1 for fraction in fractions):
            msg = (
                'positive_fraction, min_valid_fraction and min_object_visible must '
                'lie in [0, 1]'
            )
            raise ValueError(msg)
        self.images = images
        self.labels = labels
        self.class_table = class_table
        self.task = task
        self.size = size
        self.sampling = sampling
        self.min_valid_fraction = min_valid_fraction
        self.positive_fraction = positive_fraction
        self.min_object_visible = min_object_visible if sampling == 'random' else 0.0
        self.background = background
        self.seed = seed
        self.max_rejections = max_rejections
        self.transforms = transforms
        self.epoch = 0
        self._iterations = 0
        #: The split's cells read once (:meth:`hold_in_memory`), or None.
        self.memory: SceneMemory | None = None
        # The samplers see only the split's cells; reads go through *images*.
        view = copy.copy(images)
        if cells is not None:
            if cells.empty:
                msg = (
                    'this split holds no image area; use a smaller block size, or put '
                    'images in every split folder'
                )
                raise LabelError(msg)
            view.index = cells
            view._build_lookup()
        self.cells = view.index
        self._cell_boxes = np.array(
            [g.bounds for g in self.cells.geometry], dtype=np.float64
        ).reshape(-1, 4)
        self._check_cells(size)
        self.sampler: DistributedRandomGeoSampler | DistributedGridGeoSampler
        if sampling == 'random':
            total = length or self._tiling_length(size)
            self.sampler = DistributedRandomGeoSampler(view, size, total, seed)
        else:
            self.sampler = DistributedGridGeoSampler(view, size, stride or size)

    @property
    def bands(self) -> tuple[str, ...]:
        """Band names of the images."""
        return tuple(self.images.bands)

    @property
    def in_chans(self) -> int:
        """Number of image bands."""
        return len(self.images.bands)

    def _check_cells(self, size: int) -> None:
        """Raise when no cell can hold a chip of *size* pixels."""
        if not any(fits_chip(g, size, self.images.res) for g in self.cells.geometry):
            xres, yres = self.images.res
            msg = (
                f'no area of this split holds a {size} x {size} px chip '
                f'({len(self.cells)} cells, at {xres:g} x {yres:g} CRS units per '
                'pixel); use a larger block size than the chip, a smaller chip, or '
                'more data'
            )
            raise LabelError(msg)

    def _tiling_length(self, size: int) -> int:
        """Chips that tile the cells without overlap (at least 1)."""
        xres, yres = self.images.res
        total = 0
        for geometry in self.cells.geometry:
            left, bottom, right, top = geometry.bounds
            total += int((right - left) / (size * xres)) * int(
                (top - bottom) / (size * yres)
            )
        return max(1, total)

    def set_epoch(self, epoch: int) -> None:
        """Draw new chips for *epoch* (random sampling)."""
        self.epoch = epoch
        if isinstance(self.sampler, DistributedRandomGeoSampler):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        """Chips this process yields per epoch (grid: at most this many)."""
        return len(self.sampler)

    def memory_bytes(self) -> int | None:
        """Bytes :meth:`hold_in_memory` needs; None where a cell cannot be held.

        A cell can be held where its images are read directly from one file on
        their pixel grid, and its label rasters lie on that grid
        (:func:`~dspt_geo.data.labels.scene_memory.on_cell_grid`).
        """
        cells = [tuple(g.bounds) for g in self.cells.geometry]
        if not all(on_cell_grid(self.images, self.labels, c) for c in cells):
            return None
        return sum(
            cell_bytes(c, self.images.res, self.in_chans, self.task == 'segment')
            for c in cells
        )

    def hold_in_memory(self, budget: int) -> bool:
        """Read every cell once and serve chips from memory when they fit *budget*.

        Chips are then slices of the cells (equal to reading them from the files);
        queries off the cells' pixel grid still read the files.

        Args:
            budget: bytes the cells may take.

        Returns:
            whether the cells are held.

        .. versionadded:: 0.2
        """
        if self.memory is not None:
            return True
        need = self.memory_bytes()
        if need is None or need > budget:
            return False
        self.memory = SceneMemory.read(
            [tuple(g.bounds) for g in self.cells.geometry],
            self.images.res,
            self._read_files,
            self.labels if self.task == 'detect' else None,  # type: ignore[arg-type]
            self.min_object_visible,
        )
        return True

    def read(self, bounds: Bounds) -> dict[str, Tensor]:
        """The sample of the chip at *bounds* (in the images' CRS), unfiltered.

        Args:
            bounds: (left, bottom, right, top).

        Returns:
            the sample (see the class docstring).

        .. versionchanged:: 0.2
           From memory where the cells are held (:meth:`hold_in_memory`).
        """
        if self.memory is not None:
            sample = self.memory.sample(bounds)
            if sample is not None:
                return sample
        return self._read_files(bounds)

    def _read_files(self, bounds: Bounds) -> dict[str, Tensor]:
        """The sample of the chip at *bounds*, read from the files."""
        left, bottom, right, top = bounds
        xres, yres = self.images.res
        query = (
            slice(left, right, xres),
            slice(bottom, top, yres),
            slice(self.images.mint, self.images.maxt),
        )
        image = self.images[query]['image']
        valid = self.images.valid_mask(image)
        shape = (int(image.shape[1]), int(image.shape[2]))
        sample: dict[str, Tensor] = {'image': image, 'valid': valid}
        ignore = self.class_table.ignore_index
        if self.task == 'segment':
            if isinstance(self.labels, VectorLabels):
                fill = ignore if self.background is None else self.background
                mask = self.labels.mask(bounds, shape, fill)
            else:
                mask = self.labels.read_mask(bounds, shape)
            mask[~valid.numpy()] = ignore
            sample['mask'] = torch.from_numpy(mask)
        else:
            assert isinstance(self.labels, VectorLabels), 'checked in __init__'
            boxes, classes = self.labels.boxes(bounds, shape, self.min_object_visible)
            sample['boxes'] = torch.from_numpy(boxes)
            sample['labels'] = torch.from_numpy(classes)
        return sample

    def _inside_cell(self, left: float, bottom: float) -> Bounds:
        """The grid window at (*left*, *bottom*) moved back inside its cell.

        torchgeo's grid lets the last window of a row or column run past the cell;
        moving it back keeps every window in one split and on image data.
        """
        xres, yres = self.images.res
        width, height = self.size * xres, self.size * yres
        boxes = self._cell_boxes
        tolerance = 1e-6 * max(xres, yres)
        hits = np.flatnonzero(
            (boxes[:, 0] <= left + tolerance)
            & (left + tolerance < boxes[:, 2])
            & (boxes[:, 1] <= bottom + tolerance)
            & (bottom + tolerance < boxes[:, 3])
        )
        if len(hits):
            cell_left, cell_bottom, cell_right, cell_top = boxes[hits[0]]
            left = max(cell_left, min(left, cell_right - width))
            bottom = max(cell_bottom, min(bottom, cell_top - height))
        return (left, bottom, left + width, bottom + height)

    def _positive(self, sample: dict[str, Tensor]) -> bool:
        """Whether a chip holds a labelled object."""
        if self.task == 'detect':
            return len(sample['labels']) > 0
        mask = sample['mask']
        labelled = mask != self.class_table.ignore_index
        if self.background is not None:
            labelled &= mask != self.background
        return bool(labelled.any())

    def _usable(self, sample: dict[str, Tensor]) -> bool:
        """Enough valid pixels, and (segmentation) at least one labelled pixel."""
        fraction = float(sample['valid'].float().mean())
        if math.isnan(fraction) or fraction < self.min_valid_fraction:
            return False
        if self.task == 'segment':
            return bool((sample['mask'] != self.class_table.ignore_index).any())
        return True

    def _finish(self, sample: dict[str, Tensor]) -> dict[str, Tensor]:
        """Apply the user's transforms."""
        return self.transforms(sample) if self.transforms is not None else sample

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        """Yield this process's chips.

        Raises:
            EmptyRasterError: If *max_rejections* random draws in a row are skipped.
        """
        if isinstance(self.sampler, DistributedGridGeoSampler):
            for x, y, _ in self.sampler:
                sample = self.read(self._inside_cell(x.start, y.start))
                if self._usable(sample):
                    yield self._finish(sample)
            return
        shard, _ = process_shard()
        state = np.random.SeedSequence([self.seed, self.epoch, self._iterations, shard])
        self._iterations += 1
        generator = np.random.default_rng(state)
        queries = self.sampler.queries()
        rejections = 0
        for _ in range(len(self.sampler)):
            need_positive = generator.random() < self.positive_fraction
            while True:
                x, y, _ = next(queries)
                sample = self.read((x.start, y.start, x.stop, y.stop))
                if self._usable(sample) and (
                    not need_positive or self._positive(sample)
                ):
                    break
                rejections += 1
                if rejections >= self.max_rejections:
                    self._raise_rejected(need_positive)
            rejections = 0
            yield self._finish(sample)

    def _raise_rejected(self, need_positive: bool) -> None:
        """Explain why no chip passes the filters."""
        why = (
            'held no labelled object'
            if need_positive
            else f'had under {self.min_valid_fraction:.0%} valid pixels or no label'
        )
        msg = (
            f'{self.max_rejections} chips in a row {why}; the labels are too sparse '
            'for the filters (lower positive_fraction / min_valid_fraction) or do '
            'not cover this split'
        )
        raise EmptyRasterError(msg)


class LocationClassificationDataset(Dataset[dict[str, Tensor]]):
    """One chip per labelled location (point, or polygon's representative point).

    The chip is *size* pixels square, centred (to the pixel) on the location, on
    the pixel grid of the file holding it; parts outside the images are nodata.

    Samples: ``image`` float32 (C, H, W) stored values, ``label`` int64 scalar,
    ``valid`` bool (H, W).
    """

    task = 'classify'

    def __init__(
        self,
        images: SensorDataset,
        points: npt.ArrayLike,
        labels: Sequence[int],
        class_table: ClassTable,
        size: int,
        transforms: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
    ) -> None:
        """Initialise the dataset.

        Args:
            images: the images.
            points: (N, 2) locations in the images' CRS.
            labels: class index of each location.
            class_table: the classes.
            size: chip size in pixels.
            transforms: function applied to each sample.

        Raises:
            LabelError: If a location lies on no image.

        .. versionadded:: 0.1
        """
        self.images = images
        self.class_table = class_table
        self.size = size
        self.transforms = transforms
        self.points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        self.labels = [int(label) for label in labels]
        boxes = np.array([g.bounds for g in images.index.geometry]).reshape(-1, 4)
        self._boxes = boxes
        self._origins: list[tuple[float, float]] = []
        for x, y in self.points.tolist():
            inside = np.flatnonzero(
                (boxes[:, 0] <= x)
                & (x < boxes[:, 2])
                & (boxes[:, 1] < y)
                & (y <= boxes[:, 3])
            )
            if not len(inside):
                msg = f'location ({x:.6g}, {y:.6g}) lies on no image'
                raise LabelError(msg)
            left, _, _, top = boxes[inside[0]]
            self._origins.append((left, top))

    @property
    def bands(self) -> tuple[str, ...]:
        """Band names of the images."""
        return tuple(self.images.bands)

    @property
    def in_chans(self) -> int:
        """Number of image bands."""
        return len(self.images.bands)

    def __len__(self) -> int:
        """Number of locations."""
        return len(self.labels)

    def bounds(self, index: int) -> Bounds:
        """(left, bottom, right, top) of chip *index* in the images' CRS."""
        x, y = self.points[index]
        left0, top0 = self._origins[index]
        xres, yres = self.images.res
        col = math.floor((x - left0) / xres) - self.size // 2
        row = math.floor((top0 - y) / yres) - self.size // 2
        left, top = left0 + col * xres, top0 - row * yres
        return (left, top - self.size * yres, left + self.size * xres, top)

    def _on_images(
        self, bounds: Bounds, shape: tuple[int, ...]
    ) -> npt.NDArray[np.bool_]:
        """Pixels of a chip that lie on an image footprint.

        The images' fill value outside their files counts as valid where they
        declare no nodata, so chips that run off an image are masked here.
        """
        left, bottom, right, top = bounds
        height, width = int(shape[0]), int(shape[1])
        xres, yres = (right - left) / width, (top - bottom) / height
        inside = np.zeros((height, width), bool)
        for box in self._boxes:
            col0 = max(0, math.ceil((box[0] - left) / xres - 1e-6))
            col1 = min(width, math.floor((box[2] - left) / xres + 1e-6))
            row0 = max(0, math.ceil((top - box[3]) / yres - 1e-6))
            row1 = min(height, math.floor((top - box[1]) / yres + 1e-6))
            if col1 > col0 and row1 > row0:
                inside[row0:row1, col0:col1] = True
        return inside

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Read chip *index*."""
        left, bottom, right, top = self.bounds(index)
        xres, yres = self.images.res
        query = (
            slice(left, right, xres),
            slice(bottom, top, yres),
            slice(self.images.mint, self.images.maxt),
        )
        image = self.images[query]['image']
        valid = self.images.valid_mask(image) & torch.from_numpy(
            self._on_images((left, bottom, right, top), image.shape[1:])
        )
        sample = {
            'image': image,
            'label': torch.tensor(self.labels[index], dtype=torch.int64),
            'valid': valid,
        }
        return self.transforms(sample) if self.transforms is not None else sample
