"""Scoring windows over labelled scenes: overlapping tiles, every pixel counted once.

Scenes larger than a model's tile are evaluated on a grid of overlapping windows,
as whole-scene prediction tiles them: every window sees context beyond the part it
is scored on. Image chips of segmentation and detection (mask chips, COCO, VOC) are
cut by the same rule (:func:`chip_windows`). Along each axis of a cell (a split's piece of an image footprint, see
:mod:`~dspt_geo.data.labels.scenes`) windows start every ``size - overlap`` pixels,
the last one flush with the cell's far edge, and each window *owns* the pixels
nearer its centre than any other window's. Only owned pixels are scored, so every
labelled pixel of the cell counts exactly once.
"""

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from ..sampling import process_shard
from .scenes import SceneDataset

__all__ = (
    'ChipWindow',
    'SceneWindows',
    'axis_windows',
    'chip_windows',
    'window_starts',
)

Bounds = tuple[float, float, float, float]


class ChipWindow(NamedTuple):
    """A window of an image chip.

    Attributes:
        chip: position of the chip in the dataset's chip list.
        row: first row of the window in the chip.
        col: first column.
        owned: ``(x0, y0, x1, y1)`` pixels of the window that it alone scores,
            relative to the window's top-left corner.
    """

    chip: int
    row: int
    col: int
    owned: tuple[int, int, int, int]


def window_starts(length: int, size: int, overlap: int) -> list[int]:
    """Offsets of windows of *size* covering ``[0, length)``, the last edge-aligned.

    Args:
        length: scene extent in pixels.
        size: window extent in pixels.
        overlap: pixels shared by neighbouring windows (``0 <= overlap < size``).

    Returns:
        increasing offsets; ``[0]`` when the scene is not larger than a window.

    Raises:
        ValueError: If the sizes are invalid.

    .. versionadded:: 0.1

    .. versionchanged:: 0.1
       Moved here from :mod:`dspt_geo.predict.tiling`, the one window-start rule of
       prediction and evaluation (issue 10).
    """
    if length < 1 or size < 1 or not 0 <= overlap < size:
        msg = f'need length >= 1, size >= 1, 0 <= overlap < size; got {length, size, overlap}'
        raise ValueError(msg)
    if length <= size:
        return [0]
    starts = list(range(0, length - size, size - overlap))
    starts.append(length - size)
    return starts


def axis_windows(length: int, size: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows along one axis of *length* pixels, and the span each one owns.

    Args:
        length: pixels along the axis.
        size: window side.
        stride: step between window starts, at most *size*.

    Returns:
        ``(start, own_start, own_stop)`` per window, the owned span relative to the
        window's start; the owned spans tile ``[0, length)`` without overlap. An
        axis shorter than a window gets one window at 0 owning all of it.

    Raises:
        ValueError: If *stride* is not in ``[1, size]``.
    """
    if not 1 <= stride <= size:
        msg = f'stride must lie in [1, {size}] (window size), got {stride}'
        raise ValueError(msg)
    if length <= size:
        return [(0, 0, length)]
    starts = window_starts(length, size, size - stride)
    middles = [math.floor((a + b + size) / 2) for a, b in itertools.pairwise(starts)]
    edges = [0, *middles, length]
    return [
        (start, low - start, high - start)
        for start, low, high in zip(starts, edges[:-1], edges[1:], strict=True)
    ]


def chip_windows(
    shapes: Sequence[tuple[int, int]], size: tuple[int, int]
) -> list[ChipWindow]:
    """Windows of *size* pixels that cover every pixel of each chip.

    Windows follow :func:`axis_windows` without overlap (stride *size*): the last
    window of an axis is flush with the chip's far edge and overlaps its neighbour,
    and each window owns the pixels nearer its centre. A chip side shorter than the
    window gets one window at 0 (the reader pads it).

    Args:
        shapes: (height, width) of each chip.
        size: (height, width) of a window in pixels.

    Returns:
        the windows, chip by chip, row by row.
    """
    windows = []
    for chip, (height, width) in enumerate(shapes):
        for row, top, bottom in axis_windows(height, size[0], size[0]):
            for col, left, right in axis_windows(width, size[1], size[1]):
                windows.append(ChipWindow(chip, row, col, (left, top, right, bottom)))
    return windows


class SceneWindows(IterableDataset[dict[str, Tensor]]):
    """Overlapping grid windows over the cells of a :class:`SceneDataset`.

    Samples are the scene dataset's (``image``, ``valid``, ``mask`` or ``boxes`` and
    ``labels``), restricted to what the window owns: segmentation masks are
    ``ignore_index`` outside it, detection keeps the boxes whose centre lies in it.
    Every sample carries ``owned``, int64 ``(4,)`` ``x0, y0, x1, y1`` pixels of the
    owned part, so detections can be kept alike. Windows holding nothing to score
    (no labelled pixel; for detection, no valid pixel) are skipped.

    Like the scene datasets it shards itself: every process (DDP rank x
    DataLoader worker) yields every n-th window.

    .. versionadded:: 0.1
    """

    def __init__(
        self, scenes: SceneDataset, overlap: int = 0, size: int | None = None
    ) -> None:
        """Initialise the windows.

        Args:
            scenes: the split's scene dataset (its cells, images and labels).
            overlap: pixels shared by neighbouring windows.
            size: window side in pixels (default: the scene dataset's chip size).

        Raises:
            ValueError: If *overlap* is not in ``[0, size)``.
        """
        self.scenes = scenes
        self.size = size or scenes.size
        if not 0 <= overlap < self.size:
            msg = f'overlap must lie in [0, {self.size}) pixels, got {overlap}'
            raise ValueError(msg)
        self.overlap = overlap
        self.windows = self._plan()

    @property
    def task(self) -> str:
        """``'segment'`` or ``'detect'``."""
        return self.scenes.task

    def _plan(self) -> list[tuple[Bounds, tuple[int, int, int, int]]]:
        """Every window's bounds and owned pixels, cell by cell."""
        xres, yres = self.scenes.images.res
        size, stride = self.size, self.size - self.overlap
        planned = []
        for geometry in self.scenes.cells.geometry:
            left, bottom, right, top = geometry.bounds
            width = round((right - left) / xres)
            height = round((top - bottom) / yres)
            if width <= 0 or height <= 0:
                continue
            for row, own_top, own_bottom in axis_windows(height, size, stride):
                for col, own_left, own_right in axis_windows(width, size, stride):
                    x0, y1 = left + col * xres, top - row * yres
                    bounds = (x0, y1 - size * yres, x0 + size * xres, y1)
                    planned.append((bounds, (own_left, own_top, own_right, own_bottom)))
        return planned

    def __len__(self) -> int:
        """Windows this process reads (some may be skipped)."""
        shard, shards = process_shard()
        return len(range(shard, len(self.windows), shards))

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        """Yield this process's windows that hold something to score."""
        shard, shards = process_shard()
        for bounds, owned in self.windows[shard::shards]:
            sample = self.scenes.read(bounds)
            x0, y0, x1, y1 = owned
            inside = torch.zeros(sample['valid'].shape, dtype=torch.bool)
            inside[y0:y1, x0:x1] = True
            if self.task == 'segment':
                mask = sample['mask']
                mask[~inside] = self.scenes.class_table.ignore_index
                if not (mask != self.scenes.class_table.ignore_index).any():
                    continue
            else:
                if not (sample['valid'] & inside).any():
                    continue
                boxes = sample['boxes']
                cx = (boxes[:, 0] + boxes[:, 2]) / 2
                cy = (boxes[:, 1] + boxes[:, 3]) / 2
                keep = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
                sample['boxes'], sample['labels'] = boxes[keep], sample['labels'][keep]
            sample['owned'] = torch.tensor(owned, dtype=torch.int64)
            yield sample
