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

Every label form decides its split here: :func:`assign_splits` for items (chips,
locations, annotated images), :func:`scene_split` for georeferenced scenes;
:func:`stratified_fraction` keeps a share of the labels per class.
"""

import hashlib
import logging
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from ...errors import LabelError
from .vectors import SPLIT_COLUMNS, class_column_values, find_column

__all__ = (
    'SPLITS',
    'BlockSplit',
    'ColumnSplit',
    'FolderSplit',
    'RandomSplit',
    'SplitName',
    'SplitSpec',
    'assign_blocks',
    'assign_splits',
    'block_keys',
    'random_assign',
    'relative_split',
    'scene_split',
    'split_from_path',
    'split_from_value',
    'stratified_fraction',
    'training_fraction',
)

logger = logging.getLogger(__name__)

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
    count: int,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    classes: Sequence[int] | None = None,
) -> list[SplitName]:
    """Seeded split of *count* items (see :func:`assign_blocks`, one block each).

    With *classes* (each item's class), the split is stratified: each class is
    split on its own, so validation holds every class in the share of training,
    and a class of one item trains.

    .. versionchanged:: 0.2
       *classes*.
    """
    if classes is None:
        splits = assign_blocks(range(count), val_fraction, test_fraction, seed)
        return [splits[i] for i in range(count)]
    out: list[SplitName] = ['train'] * count
    for positions in _by_class(classes).values():
        splits = assign_blocks(positions, val_fraction, test_fraction, seed)
        for position in positions:
            out[position] = splits[position]
    return out


def _by_class(classes: Sequence[int]) -> dict[int, list[int]]:
    """Positions of each class, classes in order of first appearance."""
    by_class: dict[int, list[int]] = {}
    for position, label in enumerate(classes):
        by_class.setdefault(int(label), []).append(position)
    return by_class


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
    kept: list[int] = []
    for label, positions in _by_class(labels).items():
        count = max(1, round(len(positions) * fraction))
        ranked = sorted(positions, key=lambda i: _rank(seed, (label, i)))
        kept.extend(ranked[:count])
    return sorted(kept)


def assign_splits(
    spec: SplitSpec | Literal['auto'] | None,
    count: int,
    *,
    folders: Sequence[SplitName | None] | None = None,
    frame: pd.DataFrame | None = None,
    locations: Sequence[tuple[str, float, float] | None] | None = None,
    block_size: float | None = None,
    seed: int = 0,
    what: str = 'chips',
    classes: Sequence[int] | None = None,
) -> list[SplitName]:
    """The split of each of *count* items under *spec*.

    Args:
        spec: the split asked for.
        count: number of items.
        folders: split named by each item's folders (None where none).
        frame: the label table (for a column split).
        locations: (CRS, x, y) of each item, for a block split.
        block_size: block size when the :class:`BlockSplit` leaves it open.
        seed: seed of an automatic split.
        what: what the items are, for messages.
        classes: class of each item (classification): a random split is
            stratified by class.

    Returns:
        one split per item.

    Raises:
        LabelError: If the split does not fit the data.
    """
    if spec is None:
        return ['train'] * count
    if spec == 'auto':
        if folders is not None and count and all(folders):
            spec = FolderSplit()
        elif frame is not None and find_column(frame, None, SPLIT_COLUMNS):
            spec = ColumnSplit(str(find_column(frame, None, SPLIT_COLUMNS)))
        elif locations is not None and all(locations):
            spec = BlockSplit(size=block_size, seed=seed)
        else:
            logger.warning(
                '%s have no split folders, split column or location: splitting them '
                'at random (near-duplicate chips may leak into validation)',
                what,
            )
            spec = RandomSplit(seed=seed)
    match spec:
        case FolderSplit():
            names = list(folders or [None] * count)
            outside = [i for i, s in enumerate(names) if s is None]
            if outside:
                msg = (
                    f'{len(outside)} {what} are not in a train/val/test (or trn/val/tst) '
                    'folder; arrange them so, or choose another split'
                )
                raise LabelError(msg)
            return [s for s in names if s is not None]
        case ColumnSplit(column=column):
            if frame is None:
                msg = f'a column split ({column!r}) needs a label table'
                raise LabelError(msg)
            values = class_column_values(frame, column, what, 'split')
            return [split_from_value(v, f'split column {column!r}') for v in values]
        case BlockSplit():
            if locations is None or not all(locations):
                msg = (
                    f'{what} without a location (no CRS) cannot be split in blocks; '
                    'use --split random, or train/val/test folders'
                )
                raise LabelError(msg)
            size = spec.size or block_size
            if size is None:
                msg = 'a block split needs a block size in CRS units (--split blocks:SIZE)'
                raise ValueError(msg)
            places = [loc for loc in locations if loc is not None]
            keys = [
                (crs, *key)
                for (crs, _, _), key in zip(
                    places,
                    block_keys([p[1] for p in places], [p[2] for p in places], size),
                    strict=True,
                )
            ]
            splits = assign_blocks(
                keys, spec.val_fraction, spec.test_fraction, spec.seed
            )
            return [splits[key] for key in keys]
        case RandomSplit():
            return random_assign(
                count, spec.val_fraction, spec.test_fraction, spec.seed, classes
            )


def relative_split(path: str, root: str) -> SplitName | None:
    """Split named by the folders of *path* below *root*."""
    try:
        parts = Path(path).resolve().relative_to(Path(root).resolve()).parts[:-1]
    except ValueError:
        return None
    return split_from_path(parts)


def scene_split(
    spec: SplitSpec | Literal['auto'] | None,
    folders: dict[str, SplitName | None],
    seed: int = 0,
) -> FolderSplit | BlockSplit | None:
    """The split of georeferenced scenes, ``'auto'`` resolved and checked.

    ``'auto'`` is a folder split when every image file lies in a split folder, else
    a block split.

    Args:
        spec: the split asked for.
        folders: image file -> split named by its folders (None where none).
        seed: seed of an automatic block split.

    Returns:
        the split (None: everything trains).

    Raises:
        LabelError: If image files lie outside split folders under a folder split,
            or the split is by column or random (chips of a scene are neighbours).
    """
    if spec == 'auto':
        spec = FolderSplit() if all(folders.values()) else BlockSplit(seed=seed)
    match spec:
        case FolderSplit():
            outside = [f for f, s in folders.items() if s is None]
            if outside:
                msg = (
                    f'{len(outside)} image files are not in a train/val/test folder '
                    f'(e.g. {outside[0]}); arrange them so, or use --split blocks'
                )
                raise LabelError(msg)
        case ColumnSplit() | RandomSplit():
            msg = (
                f'--split {"random" if isinstance(spec, RandomSplit) else "column"} '
                'does not fit image scenes: chips drawn from one scene are '
                'neighbours, so split by area (--split blocks) or by folders'
            )
            raise LabelError(msg)
    return spec


def training_fraction(
    chosen: Sequence[int],
    fraction: float,
    seed: int = 0,
    classes: Sequence[int] | None = None,
) -> list[int]:
    """The training items kept under a label fraction (:func:`stratified_fraction`).

    Args:
        chosen: the training items (positions among all items).
        fraction: share to keep, in (0, 1].
        seed: seed of the draw.
        classes: class of every item (all, not only *chosen*): the share is kept
            per class, at least one each; None: of all items alike (images of
            segmentation or detection), at least one.

    Returns:
        the kept items, a subset of *chosen*, ascending.

    .. versionadded:: 0.2
    """
    strata = [0] * len(chosen) if classes is None else [classes[k] for k in chosen]
    return [chosen[i] for i in stratified_fraction(strata, fraction, seed)]


def summarise(splits: Sequence[SplitName]) -> str:
    """``'train 80, val 20'``: items per split, for messages."""
    return ', '.join(f'{s} {splits.count(s)}' for s in SPLITS if s in splits)
