"""Windows over a scene, their blend weights, and a strip accumulator of logits.

A scene is cut into square windows of ``size`` pixels that overlap by ``overlap``
(stride ``size - overlap``, TG ``torchgeo/samplers/single.py``). The last window of
each row and column is moved back to end exactly at the scene edge, so no strip is
missed and no window reads past the scene; a scene smaller than a window gets one
window, padded.

Overlapping logits are blended by a weight that is a product of two 1-D profiles.
Along an edge that is shared with a neighbouring window the profile is 0 for the
outer ``overlap // 4`` pixels (where a convolution's zero padding changes the
logits), then rises as ``sin^2`` over the rest of the overlap, then stays 1. Two
neighbours' ramps add up to exactly 1 (a partition of unity), so the blend has no
seam; along a scene edge the profile stays 1. Where a model's receptive-field
radius is at most ``overlap // 4``, every blended logit comes from pixels that saw
their whole receptive field, and the tiled result equals the whole-scene result.

:class:`StripAccumulator` holds the weighted logits of one row of windows (``size``
rows by the scene width) and hands back rows as soon as no later window touches
them, so memory grows with the scene width, never with its area.
"""

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from ..data.labels.windows import window_starts

__all__ = (
    'FinishedRows',
    'StripAccumulator',
    'Tile',
    'TileGrid',
    'axis_profile',
    'blend_weights',
    'cell_tiles',
    'tile_candidates',
    'window_starts',
)


def tile_candidates(
    tile: int, patch: int, overlap: int, height: int, width: int, max_tokens: int
) -> list[int]:
    """Window sizes worth trying for a model that takes any multiple of *patch*.

    Multiples of the training *tile* (1, 2, 3, 4, 6, 8 times; each rounded up to
    the patch grid) up to the largest size: *max_tokens* patches per window, or
    the scene's shorter side rounded down to the patch grid, whichever is
    smaller; the largest size is a candidate itself. Windows so stay inside the
    scene, as training tiles do: none is padded (padding is not what a
    convolution's zero padding at the scene edge computes).

    Args:
        tile: training tile side in pixels.
        patch: the model's patch size in pixels.
        overlap: overlap of neighbouring windows (a window must exceed it).
        height: scene rows.
        width: scene columns.
        max_tokens: most patches per window.

    Returns:
        increasing sizes, the first one *tile*.

    .. versionadded:: 0.1
    """
    largest = math.isqrt(max_tokens) * patch
    scene = min(height, width) // patch * patch
    sizes = [tile]
    for factor in (2, 3, 4, 6, 8):
        size = -(-factor * tile // patch) * patch
        if size > min(largest, scene):
            break
        sizes.append(size)
    last = min(largest, scene)
    if last > max(sizes[-1], overlap):
        sizes.append(last)
    return sizes


class Tile(NamedTuple):
    """One window: where it is and which of its sides lie on the scene edge.

    ``height`` and ``width`` are the part inside the scene; they are less than the
    window size only when the scene is smaller than a window (the rest is padding).
    """

    #: position in the grid's row-major order.
    number: int
    row: int
    col: int
    height: int
    width: int
    top: bool
    bottom: bool
    left: bool
    right: bool


@dataclass(frozen=True)
class TileGrid:
    """The windows of a scene, in row-major order.

    Attributes:
        height: scene rows.
        width: scene columns.
        size: window side in pixels.
        overlap: pixels shared by neighbouring windows.

    .. versionadded:: 0.1
    """

    height: int
    width: int
    size: int
    overlap: int

    @property
    def rows(self) -> list[int]:
        """Row offsets of the window rows."""
        return window_starts(self.height, self.size, self.overlap)

    @property
    def cols(self) -> list[int]:
        """Column offsets of the window columns."""
        return window_starts(self.width, self.size, self.overlap)

    def __len__(self) -> int:
        """Number of windows."""
        return len(self.rows) * len(self.cols)

    def __iter__(self) -> Iterator[Tile]:
        """Windows, row by row."""
        rows, cols = self.rows, self.cols
        number = 0
        for i, row in enumerate(rows):
            for j, col in enumerate(cols):
                yield Tile(
                    number=number,
                    row=row,
                    col=col,
                    height=min(self.size, self.height - row),
                    width=min(self.size, self.width - col),
                    top=i == 0,
                    bottom=i == len(rows) - 1,
                    left=j == 0,
                    right=j == len(cols) - 1,
                )
                number += 1


def cell_tiles(height: int, width: int, size: int) -> list[Tile]:
    """Windows of a classification grid: one per ``size`` x ``size`` cell.

    Cell ``(i, j)`` covers rows ``i * size`` and columns ``j * size`` onwards; the
    grid has ``ceil(height / size)`` rows and ``ceil(width / size)`` columns, so
    the last cells may reach past the scene. Their windows are moved back inside
    the scene (the model sees whole windows of data), or padded when the scene is
    smaller than a window. A tile's ``number`` is ``i * columns + j``.

    Args:
        height: scene rows.
        width: scene columns.
        size: cell and window side in pixels.

    Returns:
        the windows, row by row.

    .. versionadded:: 0.1
    """
    rows, cols = -(-height // size), -(-width // size)
    tiles = []
    for i in range(rows):
        for j in range(cols):
            row = max(0, min(i * size, height - size))
            col = max(0, min(j * size, width - size))
            tiles.append(
                Tile(
                    number=i * cols + j,
                    row=row,
                    col=col,
                    height=min(size, height - row),
                    width=min(size, width - col),
                    top=True,
                    bottom=True,
                    left=True,
                    right=True,
                )
            )
    return tiles


def axis_profile(
    size: int, overlap: int, start_edge: bool, end_edge: bool
) -> npt.NDArray[np.float32]:
    """1-D blend profile of a window along one axis (see the module docstring).

    Args:
        size: window side in pixels.
        overlap: pixels shared with each neighbour.
        start_edge: the window's first pixel lies on the scene edge (no ramp).
        end_edge: the window's last pixel lies on the scene edge (no ramp).

    Returns:
        ``(size,)`` weights in ``[0, 1]``.

    .. versionadded:: 0.1
    """
    margin = overlap // 4
    ramp = overlap - 2 * margin
    distance = np.arange(size, dtype=np.float64)
    rise = np.clip((distance - margin + 0.5) / max(ramp, 1), 0.0, 1.0)
    rise[distance < margin] = 0.0
    if ramp == 0:
        rise[distance >= margin] = 1.0
    rise = np.sin(rise * (math.pi / 2)) ** 2
    profile = np.ones(size)
    if not start_edge:
        profile *= rise
    if not end_edge:
        profile *= rise[::-1]
    return profile.astype(np.float32)


def blend_weights(size: int, overlap: int, tile: Tile) -> npt.NDArray[np.float32]:
    """2-D blend weights of *tile*: the outer product of its two axis profiles.

    Args:
        size: window side in pixels.
        overlap: pixels shared by neighbouring windows.
        tile: the window (its edge flags choose the profiles).

    Returns:
        ``(size, size)`` weights.

    .. versionadded:: 0.1
    """
    rows = axis_profile(size, overlap, tile.top, tile.bottom)
    cols = axis_profile(size, overlap, tile.left, tile.right)
    return np.outer(rows, cols)


class FinishedRows(NamedTuple):
    """Scene rows that no later window touches: views into the strip.

    The views are valid until the accumulator's :meth:`StripAccumulator.advance`
    (or :meth:`StripAccumulator.add_batch`) generator resumes; :meth:`logits` and
    :meth:`valid` compute the blend for a range of columns, so that callers can
    bound their temporaries.

    .. versionchanged:: 0.1
       No ``seen`` mask: a positive weight sum implies a valid input pixel
       (weights are the blend weights times the valid mask, issue 16).
    """

    #: first scene row.
    row: int
    #: ``(channels, n, width)`` weighted sums of logits.
    sums: Tensor
    #: ``(n, width)`` sums of weights.
    weights: Tensor

    @property
    def height(self) -> int:
        """Number of rows."""
        return int(self.weights.shape[0])

    def logits(self, cols: slice = slice(None)) -> Tensor:
        """Blended logits (weighted means; 0 where no window contributed)."""
        return self.sums[:, :, cols] / self.weights[:, cols].clamp_min(1e-12)

    def valid(self, cols: slice = slice(None)) -> Tensor:
        """Pixels valid in the input of a window that gave them a positive weight."""
        return self.weights[:, cols] > 0


class StripAccumulator:
    """Weighted sums of logits over one row of windows, flushed row by row.

    Windows must arrive in row-major order (as :class:`TileGrid` yields them).
    Before adding a window that starts at row ``r``, call :meth:`advance` with
    ``r``: rows above it are finished and come back blended;
    :meth:`add_batch` does both for a batch of windows, when a window does not
    fit in the strip's ``rows``. Memory is ``(channels + 1) * rows * width``
    floats; a strip of several rows of windows finishes them together, in fewer
    and larger operations.

    The weight sums are held as one more channel after the logits' and are
    accumulated by the same fused multiply-add (a window's logits extended by a
    channel of ones, times its weights), so a window costs one tensor operation
    (issue 16: per-window operations were most of the blending's time); ``1 * w``
    is exact, so the sums are those of adding the weights on their own.

    .. versionadded:: 0.1

    .. versionchanged:: 0.1
       Added :meth:`add_batch`; weight sums share the logits' buffer; added
       *rows* (issue 16).
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        size: int,
        device: torch.device | str = 'cpu',
        rows: int | None = None,
    ) -> None:
        """Allocate the strip.

        Args:
            channels: logit channels (classes).
            height: scene rows.
            width: scene columns.
            size: window side in pixels.
            device: where the strip lives (the model's device saves transfers).
            rows: rows of the strip, at least *size* (default: *size*).
        """
        self.height = height
        self.width = width
        self.size = size
        self.rows = max(size, rows or size)
        self.channels = channels
        self.top = 0
        #: weighted logit sums (``channels``), then the weight sums (the last).
        self.buffer = torch.zeros(channels + 1, self.rows, width, device=device)
        #: the strip's view of each window place (the strip is shifted in place).
        self._views: dict[tuple[int, int, int, int], Tensor] = {}
        #: windows' logits and a channel of ones (see :meth:`_with_ones`).
        self._windows: Tensor | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the strip."""
        return self.buffer.numel() * self.buffer.element_size()

    def add(self, tile: Tile, logits: Tensor, weights: Tensor, valid: Tensor) -> None:
        """Add one window's logits.

        Args:
            tile: the window; it must start at or below :attr:`top` and end within
                the strip.
            logits: ``(channels, size, size)`` float logits.
            weights: ``(size, size)`` blend weights.
            valid: ``(size, size)`` bool mask of valid input pixels.

        Raises:
            ValueError: If the window lies above the rows already flushed or below
                the strip (windows out of row-major order).
        """
        self._add(tile, self._with_ones(logits[None])[0], weights * valid)

    def add_batch(
        self, tiles: Sequence[Tile], logits: Tensor, weights: Tensor
    ) -> Iterator[FinishedRows]:
        """Add windows in row-major order, handing back the rows they finish.

        Args:
            tiles: the windows, in row-major order, none above :attr:`top`.
            logits: ``(B, channels, size, size)`` float logits.
            weights: ``(B, size, size)`` blend weights times the valid masks.

        Yields:
            finished rows (see :meth:`advance`), before the first window that
            does not fit in the strip is added.

        Raises:
            ValueError: If a window lies above the rows already flushed.
        """
        for tile, window, weight in zip(
            tiles, self._with_ones(logits).unbind(0), weights.unbind(0), strict=True
        ):
            if tile.row + tile.height > self.top + self.rows:
                yield from self.advance(tile.row)
            self._add(tile, window, weight)

    def _add(self, tile: Tile, window: Tensor, weight: Tensor) -> None:
        """Add ``window * weight`` (logits and a channel of ones) at *tile*."""
        offset = tile.row - self.top
        if offset < 0 or offset + tile.height > self.rows:
            msg = f'window at row {tile.row} outside the strip at rows {self.top}+{self.rows}'
            raise ValueError(msg)
        h, w = tile.height, tile.width
        place = (offset, tile.col, h, w)
        view = self._views.get(place)
        if view is None:
            view = self.buffer[:, offset : offset + h, tile.col : tile.col + w]
            self._views[place] = view
        if (h, w) != window.shape[-2:]:
            window, weight = window[:, :h, :w], weight[:h, :w]
        view.addcmul_(window, weight)

    def _with_ones(self, logits: Tensor) -> Tensor:
        """``(B, K, H, W)`` logits followed by a channel of ones: ``(B, K + 1, H, W)``.

        In a buffer kept between calls (its ones written once), valid until the
        next call.
        """
        batch = logits.shape[0]
        buffer = self._windows
        if (
            buffer is None
            or buffer.shape[0] < batch
            or buffer.shape[2:] != logits.shape[2:]
        ):
            buffer = logits.new_ones((batch, logits.shape[1] + 1, *logits.shape[2:]))
            self._windows = buffer
        windows = buffer[:batch]
        windows[:, :-1].copy_(logits)
        return windows

    def advance(self, row: int) -> Iterator[FinishedRows]:
        """Hand back the rows above *row* (no later window may touch them).

        Args:
            row: first row still open; the scene height finishes everything.

        Yields:
            finished rows, top to bottom, at most :attr:`rows` at a time.
        """
        row = min(row, self.height)
        buffer, channels = self.buffer, self.channels
        while self.top < row:
            n = min(row - self.top, self.rows)
            yield FinishedRows(self.top, buffer[:channels, :n], buffer[channels, :n])
            # Shift the strip up by n rows (clone: the slices overlap).
            rest = buffer[:, n:].clone()
            buffer[:, : self.rows - n] = rest
            buffer[:, self.rows - n :] = 0
            self.top += n
