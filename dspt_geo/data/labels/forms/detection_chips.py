"""Detection chips: image chips with boxes, whatever file format held the boxes."""

from collections.abc import Sequence
from typing import Any

from ..chips import ChipDetectionDataset
from ..classes import ClassTable
from ..data import LabelledData
from ..formats import BoxRecord
from ..split import assign_splits
from .common import (
    OpenOptions,
    chip_data,
    label_fraction,
    log_chip_windows,
    log_splits,
    per_split,
)

__all__ = ('detection_chips',)


def detection_chips(
    records: Sequence[BoxRecord],
    index_of: Any,
    table: ClassTable,
    options: OpenOptions,
    reader: str,
) -> LabelledData:
    """Detection chip datasets per split."""
    splits = assign_splits(
        options.split,
        len(records),
        folders=[r.split for r in records],
        seed=options.seed,
        what=f'{reader} images',
    )
    log_splits(reader, splits)
    datasets = per_split(
        splits,
        lambda chosen: ChipDetectionDataset(
            [records[k].path for k in chosen],
            [records[k].boxes for k in chosen],
            [[index_of(v) for v in records[k].labels] for k in chosen],
            table,
            size=options.size,
            difficult=[records[k].difficult for k in chosen]
            if any(r.difficult is not None for r in records)
            else None,
        ),
        label_fraction(options, f'{reader} images'),
    )
    log_chip_windows(f'{reader} image chips', datasets)
    return chip_data('detect', table, datasets, reader)
