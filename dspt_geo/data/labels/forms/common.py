"""What every label form's reader shares: the options, and chip datasets per split."""

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from rasterio.crs import CRS
from torch import Tensor
from torch.utils.data import Dataset

from .... import SUMMARY_LOGGER
from ....errors import LabelError
from ..chips import ChipDetectionDataset, ChipSegmentationDataset
from ..classes import ClassTable
from ..data import LabelledData, Task
from ..split import SPLITS, SplitName, SplitSpec, summarise, training_fraction

__all__ = (
    'COLOUR_TABLE_NEEDED',
    'OpenOptions',
    'check_classes',
    'chip_data',
    'colour_coded',
    'label_fraction',
    'log_chip_windows',
    'log_splits',
    'per_split',
)

logger = logging.getLogger(__name__)
#: Run settings shown at the default verbosity (the label fraction's draw).
summary = logging.getLogger(SUMMARY_LOGGER)


@dataclass(frozen=True)
class OpenOptions:
    """:func:`open_labelled`'s keyword arguments, passed to the readers."""

    task: Task
    class_column: str | None
    class_name: str | None
    split: SplitSpec | Literal['auto'] | None
    class_table: ClassTable | None
    size: int | None
    bands: Sequence[str] | None
    group: str | None
    length: int | None
    stride: int | None
    min_valid_fraction: float
    positive_fraction: float
    background: str | None
    colour_coded: bool | None
    ignore_values: tuple[int, ...]
    ignore_index: int
    labels_crs: CRS | str | None
    layer: str | int | None
    path_column: str | None
    seed: int
    label_fraction: float | None = None
    label_seed: int = 0


def per_split(
    splits: Sequence[SplitName],
    build: Callable[[list[int]], Dataset[dict[str, Tensor]]],
    keep: Callable[[list[int]], list[int]] | None = None,
) -> dict[SplitName, Dataset[dict[str, Tensor]] | None]:
    """One dataset per split that has items, built from the items' positions.

    Args:
        splits: the split of each item.
        build: the dataset of some items.
        keep: the training items kept of those the split gives (a label
            fraction, see :func:`label_fraction`); None: all.

    Raises:
        LabelError: If no item is left for training.
    """
    datasets: dict[SplitName, Dataset[dict[str, Tensor]] | None] = {}
    for name in SPLITS:
        chosen = [i for i, split in enumerate(splits) if split == name]
        if name == 'train' and chosen and keep is not None:
            chosen = keep(chosen)
        datasets[name] = build(chosen) if chosen else None
    if datasets['train'] is None:
        msg = f'the split leaves nothing for training ({summarise(list(splits))})'
        raise LabelError(msg)
    return datasets


def label_fraction(
    options: OpenOptions,
    what: str,
    classes: Sequence[int] | None = None,
    table: ClassTable | None = None,
) -> Callable[[list[int]], list[int]] | None:
    """The training items a label fraction keeps, logged (None: no fraction).

    Args:
        options: the options (``label_fraction``, ``label_seed``).
        what: what the items are, for the log.
        classes: class of every item (classification: stratified, at least one
            per class); None: items (images) alike.
        table: the classes, to name them in the log.
    """
    fraction = options.label_fraction
    if fraction is None:
        return None

    def keep(chosen: list[int]) -> list[int]:
        kept = training_fraction(chosen, fraction, options.label_seed, classes)
        if classes is None:
            summary.info(
                'label fraction %g (seed %d): training keeps %d of %d %s',
                fraction,
                options.label_seed,
                len(kept),
                len(chosen),
                what,
            )
            return kept
        counts = Counter(classes[k] for k in kept)
        of = Counter(classes[k] for k in chosen)
        names = table.names if table is not None else None
        summary.info(
            'label fraction %g (seed %d): training keeps %d of %d %s; per class: %s',
            fraction,
            options.label_seed,
            len(kept),
            len(chosen),
            what,
            ', '.join(
                f'{names[c] if names else c} {counts[c]}/{of[c]}' for c in sorted(of)
            ),
        )
        return kept

    return keep


def chip_data(
    task: Task,
    table: ClassTable,
    datasets: dict[SplitName, Dataset[dict[str, Tensor]] | None],
    reader: str,
) -> LabelledData:
    """Chip datasets per split as :class:`LabelledData`; bands from the training chips."""
    train = datasets['train']
    assert train is not None, 'checked by per_split'
    return LabelledData(
        task=task,
        class_table=table,
        bands=train.bands,  # type: ignore[attr-defined]
        train=train,
        val=datasets['val'],
        test=datasets['test'],
        reader=reader,
    )


def log_splits(reader: str, splits: Sequence[SplitName]) -> None:
    """Log the split sizes."""
    logger.info('%s: %s', reader, summarise(list(splits)))


def check_classes(
    table: ClassTable, labels: Sequence[int], splits: Sequence[SplitName]
) -> None:
    """Warn about classes with no training sample."""
    trained = {label for label, s in zip(labels, splits, strict=True) if s == 'train'}
    absent = [name for i, name in enumerate(table.names) if i not in trained]
    if absent:
        logger.warning('classes %s have no training sample', absent)


def log_chip_windows(
    what: str, datasets: dict[SplitName, Dataset[dict[str, Tensor]] | None]
) -> None:
    """Say once how chips of another size than the window become samples."""
    chips = [
        d
        for d in datasets.values()
        if isinstance(d, ChipSegmentationDataset | ChipDetectionDataset)
    ]
    if not chips or chips[0].size is None:
        return
    height, width = chips[0].size
    shapes = [shape for d in chips for shape in d.shapes]
    larger = sum(h > height or w > width for h, w in shapes)
    smaller = sum(h < height or w < width for h, w in shapes)
    if not larger and not smaller:
        return
    windows = sum(len(d) for d in chips)
    sizes = sorted(set(shapes))
    shown = ', '.join(f'{h} x {w}' for h, w in sizes[:3]) + (
        ', ...' if len(sizes) > 3 else ''
    )
    logger.warning(
        '%s of %s px are cut into %d windows of %d x %d px (--image-size), never '
        'resampled: %d chips are larger than a window, %d smaller in a side and '
        'padded (padding is ignored by the loss and the metrics)',
        what,
        shown,
        windows,
        height,
        width,
        larger,
        smaller,
    )


def colour_coded(options: OpenOptions, count: int) -> bool:
    """Whether masks are colours: as asked, else when they have 3 bands or more."""
    return options.colour_coded if options.colour_coded is not None else count >= 3


#: The error for colour masks without a class table.
COLOUR_TABLE_NEEDED = (
    'colour-coded masks need a class/colour table: pass --class-table, a JSON or '
    'CSV of class names and colours'
)
