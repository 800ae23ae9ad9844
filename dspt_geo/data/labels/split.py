"""Train / validation / test splits of labelled data.

Four ways to split, each a small frozen dataclass passed as ``split``:

* :class:`FolderSplit`: the folder layout says it (``train/``, ``val/``, ``test/``
  or ``trn/``, ``val/``, ``tst/`` anywhere in a path).
* :class:`ColumnSplit`: a column of the label table says it.
* :class:`BlockSplit`: square blocks of a given size in CRS units go to train,
  validation or test by a seeded draw. Blocks of image scenes start at the images'
  top-left corner (no sliver blocks at the edge of a single scene); blocks of chips
  and points start at the CRS origin. Neighbouring pixels
  are alike, so a pixel- or chip-level random split puts near copies of training
  chips in validation and overstates accuracy; whole blocks keep them apart.
* :class:`RandomSplit`: a seeded draw per chip, for chips with no location.

The draw ranks blocks (or chips) by a hash of the seed and the block's key, so it
is the same on every machine and run, and adding data elsewhere moves few blocks.
"""

import hashlib
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ...errors import LabelError

__all__ = (
    'SPLITS',
    'BlockSplit',
    'ColumnSplit',
    'FolderSplit',
    'RandomSplit',
    'SplitName',
    'SplitSpec',
    'assign_blocks',
    'block_keys',
    'random_assign',
    'split_from_path',
    'split_from_value',
    'stratified_fraction',
)

SplitName = Literal['train', 'val', 'test']

#: The splits, in order.
SPLITS: tuple[SplitName, ...] = ('train', 'val', 'test')

#: Spellings of split names in folders and columns (lower case).
_ALIASES: dict[str, SplitName] = {
    'train': 'train', 'trn': 'train', 'training': 'train',
    'val': 'val', 'valid': 'val', 'validation': 'val', 'validate': 'val', 'dev': 'val',
    'test': 'test', 'tst': 'test', 'testing': 'test',
}  # fmt: skip


@dataclass(frozen=True)
class FolderSplit:
    """Split by ``train``/``val``/``test`` (or ``trn``/``val``/``tst``) folders."""


@dataclass(frozen=True)
class ColumnSplit:
    """Split by a column of the label table holding ``train``/``val``/``test``.

    Attributes:
        column: the column's name.
    """

    column: str


@dataclass(frozen=True)
class BlockSplit:
    """Spatially blocked random split.

    Attributes:
        size: block side in CRS units (None: four chips' width).
        val_fraction: share of blocks for validation.
        test_fraction: share of blocks for testing.
        seed: seed of the draw.
    """

    size: float | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        """Check the fractions and size.

        Raises:
            ValueError: If a fraction is outside [0, 1), they sum to 1 or more, or
                *size* is not positive.
        """
        _check_fractions(self.val_fraction, self.test_fraction)
        if self.size is not None and not self.size > 0:
            msg = f'block size must be positive, got {self.size}'
            raise ValueError(msg)


@dataclass(frozen=True)
class RandomSplit:
    """Seeded random split per chip (only for chips without a location).

    Attributes:
        val_fraction: share of chips for validation.
        test_fraction: share of chips for testing.
        seed: seed of the draw.
    """

    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        """Check the fractions (see :class:`BlockSplit`)."""
        _check_fractions(self.val_fraction, self.test_fraction)


SplitSpec = FolderSplit | ColumnSplit | BlockSplit | RandomSplit


def _check_fractions(val: float, test: float) -> None:
    """Raise ValueError unless 0 <= val, test and val + test < 1."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        msg = (
            f'split fractions val={val}, test={test} must be in [0, 1) and leave some '
            'data for training'
        )
        raise ValueError(msg)


def split_from_value(value: object, source: str = 'the split column') -> SplitName:
    """The split a column value names.

    Raises:
        LabelError: If the value names no split.
    """
    key = str(value).strip().lower()
    if key not in _ALIASES:
        msg = (
            f'{source} holds {value!r}, which names no split; use train/val/test '
            '(or trn/valid/validation/tst)'
        )
        raise LabelError(msg)
    return _ALIASES[key]


def split_from_path(parts: Iterable[str]) -> SplitName | None:
    """The split named by the first folder of *parts* that names one, or None."""
    for part in parts:
        split = _ALIASES.get(part.lower())
        if split is not None:
            return split
    return None


def _rank(seed: int, key: Hashable) -> int:
    """Stable pseudo-random rank of *key* under *seed* (no use of ``hash()``)."""
    digest = hashlib.sha256(f'{seed}|{key!r}'.encode()).digest()
    return int.from_bytes(digest[:8], 'big')


def _counts(total: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Validation and test counts of *total* items.

    At least one each where asked, while leaving at least one for training.
    """
    val = round(total * val_fraction)
    test = round(total * test_fraction)
    if val_fraction > 0 and val == 0 and total >= 2:
        val = 1
    if test_fraction > 0 and test == 0 and total - val >= 2:
        test = 1
    while val + test >= total and (val or test):
        if test:
            test -= 1
        else:
            val -= 1
    return val, test


def assign_blocks(
    keys: Iterable[Hashable],
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> dict[Hashable, SplitName]:
    """Deal blocks to splits by a seeded draw.

    Every block goes to exactly one split. Blocks are ranked by a hash of (*seed*,
    key): the first ``round(n * val_fraction)`` go to validation (at least one when
    *val_fraction* > 0 and there are two blocks or more), the next to test, the rest
    to training (at least one).

    Args:
        keys: block keys (repeats allowed), e.g. from :func:`block_keys`.
        val_fraction: share of blocks for validation.
        test_fraction: share of blocks for testing.
        seed: seed of the draw.

    Returns:
        block key -> split.
    """
    _check_fractions(val_fraction, test_fraction)
    distinct = sorted(set(keys), key=lambda k: (_rank(seed, k), repr(k)))
    val, test = _counts(len(distinct), val_fraction, test_fraction)
    splits: dict[Hashable, SplitName] = {}
    for i, key in enumerate(distinct):
        splits[key] = 'val' if i < val else 'test' if i < val + test else 'train'
    return splits


def block_keys(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    size: float,
    origin: tuple[float, float] = (0.0, 0.0),
) -> list[tuple[int, int]]:
    """Keys of the blocks holding points (x, y).

    Args:
        x: x coordinates.
        y: y coordinates.
        size: block side in CRS units.
        origin: a corner of the block grid.

    Returns:
        ``(floor((x - ox) / size), floor((y - oy) / size))`` per point.
    """
    xs = np.floor((np.asarray(x, dtype=np.float64) - origin[0]) / size)
    ys = np.floor((np.asarray(y, dtype=np.float64) - origin[1]) / size)
    return list(
        zip(xs.astype(np.int64).tolist(), ys.astype(np.int64).tolist(), strict=True)
    )


def block_edges(
    low: float, high: float, size: float, origin: float = 0.0
) -> list[float]:
    """Block edges (``origin + k * size``) strictly inside (low, high), with the ends."""
    first = math.floor((low - origin) / size) + 1
    last = math.ceil((high - origin) / size) - 1
    edges = (origin + i * size for i in range(first, last + 1))
    return [low, *(e for e in edges if low < e < high), high]


def random_assign(
    count: int, val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0
) -> list[SplitName]:
    """Seeded split of *count* items (see :func:`assign_blocks`, one block each)."""
    splits = assign_blocks(range(count), val_fraction, test_fraction, seed)
    return [splits[i] for i in range(count)]


def stratified_fraction(
    labels: Sequence[int], fraction: float, seed: int = 0
) -> list[int]:
    """A seeded, class-stratified share of items: the few-label setting.

    Of each class's *n* items, ``round(n * fraction)`` are kept, and at least one, so
    every class stays represented at 1 % of the labels. Items are ranked by a hash
    of (*seed*, class, position), as :func:`assign_blocks` ranks blocks: the draw is
    the same on every machine, and a smaller fraction is a subset of a larger one
    under the same seed.

    Args:
        labels: class index of each item.
        fraction: share of each class to keep, in (0, 1].
        seed: seed of the draw.

    Returns:
        the kept items' positions in *labels*, ascending.

    Raises:
        ValueError: If *fraction* is not in (0, 1].

    .. versionadded:: 0.1
    """
    if not 0 < fraction <= 1:
        msg = f'label fraction must be in (0, 1], got {fraction}'
        raise ValueError(msg)
    by_class: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(position)
    kept: list[int] = []
    for label, positions in by_class.items():
        count = max(1, round(len(positions) * fraction))
        ranked = sorted(positions, key=lambda i: _rank(seed, (label, i)))
        kept.extend(ranked[:count])
    return sorted(kept)


def summarise(splits: Sequence[SplitName]) -> str:
    """``'train 80, val 20'``: items per split, for messages."""
    return ', '.join(f'{s} {splits.count(s)}' for s in SPLITS if s in splits)
