"""Classification chips in class folders, in a folder or a ``.zip``.

The class is the folder's name; ``train``/``val``/``test`` folders above or below
the class folders name the split. :func:`chip_classification` builds the datasets of
every form of classification chips (also chip tables).
"""

import logging
from collections.abc import Sequence

import pandas as pd
import rasterio

from ..chips import ChipClassificationDataset, chip_info, chip_shape
from ..classes import ClassTable
from ..data import LabelledData
from ..formats import read_class_folders
from ..split import BlockSplit, SplitName, assign_splits
from ..vectors import SPLIT_COLUMNS, find_column
from .common import (
    OpenOptions,
    check_classes,
    chip_data,
    label_fraction,
    log_splits,
    per_split,
)

__all__ = (
    'chip_block_size',
    'chip_classification',
    'chip_locations',
    'needs_locations',
    'open_class_folders',
)

logger = logging.getLogger(__name__)


def open_class_folders(roots: Sequence[str], options: OpenOptions) -> LabelledData:
    """Chips in class folders."""
    records = [record for root in roots for record in read_class_folders(root)]
    table = options.class_table or ClassTable.from_labels(
        (r.label for r in records), options.ignore_index, numeric=False
    )
    labels = [table.index_of_label(r.label, r.path) for r in records]
    paths = [r.path for r in records]
    folders = [r.split for r in records]
    locations = chip_locations(paths) if needs_locations(options, folders) else None
    splits = assign_splits(
        options.split,
        len(records),
        folders=folders,
        locations=locations,
        block_size=chip_block_size(paths, options) if locations else None,
        seed=options.seed,
        what='class-folder chips',
        classes=labels,
    )
    check_classes(table, labels, splits)
    log_splits('class folders', splits)
    return chip_classification(paths, labels, splits, table, options, 'class-folders')


def chip_classification(
    paths: Sequence[str],
    labels: Sequence[int],
    splits: Sequence[SplitName],
    table: ClassTable,
    options: OpenOptions,
    reader: str,
) -> LabelledData:
    """Classification chip datasets per split."""
    if options.size is not None:
        height, width = chip_shape(paths[0])
        if (height, width) != (options.size, options.size):
            logger.warning(
                'classification chips are resized whole to %d x %d px (--image-size), '
                'as usual for scene classification (e.g. %s is %d x %d px)',
                options.size,
                options.size,
                paths[0],
                height,
                width,
            )
    datasets = per_split(
        splits,
        lambda chosen: ChipClassificationDataset(
            [paths[k] for k in chosen],
            [labels[k] for k in chosen],
            table,
            size=options.size,
        ),
        label_fraction(options, 'chips', labels, table),
    )
    return chip_data('classify', table, datasets, reader)


def chip_locations(paths: Sequence[str]) -> list[tuple[str, float, float] | None]:
    """(CRS, x, y) of each chip's centre, None for chips without a CRS."""
    locations: list[tuple[str, float, float] | None] = []
    for path in paths:
        info = chip_info(path)
        locations.append((info.crs, *info.centre) if info.crs and info.centre else None)
    return locations


def chip_block_size(paths: Sequence[str], options: OpenOptions) -> float | None:
    """Default block side for georeferenced chips: four chip widths."""
    if not isinstance(options.split, BlockSplit) and options.split != 'auto':
        return None
    if chip_info(paths[0]).crs is None:
        return None
    with rasterio.open(paths[0]) as src:
        return float(4 * max(src.width * abs(src.res[0]), src.height * abs(src.res[1])))


def needs_locations(
    options: OpenOptions,
    folders: Sequence[SplitName | None],
    frame: pd.DataFrame | None = None,
) -> bool:
    """Whether the split asked for needs chip locations (reads every header)."""
    if isinstance(options.split, BlockSplit):
        return True
    has_column = frame is not None and find_column(frame, None, SPLIT_COLUMNS)
    return options.split == 'auto' and not has_column and not (folders and all(folders))
