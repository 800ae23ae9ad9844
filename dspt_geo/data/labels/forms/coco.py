"""COCO JSON boxes over image chips (one file, or one per split)."""

from collections.abc import Sequence

from ....errors import LabelError
from ..classes import ClassTable
from ..data import LabelledData
from ..formats import BoxRecord, read_coco
from .common import OpenOptions
from .detection_chips import detection_chips

__all__ = ('matches', 'open_coco')


def matches(path: str) -> bool:
    """Whether a JSON file is COCO (read only its start: GeoJSON may be large)."""
    with open(path, encoding='utf-8') as handle:
        head = handle.read(1 << 16)
    return '"annotations"' in head and '"images"' in head and '"features"' not in head


def open_coco(
    image_paths: Sequence[str], label_paths: Sequence[str], options: OpenOptions
) -> LabelledData:
    """Image chips with COCO JSON boxes (one file, or one per split)."""
    root = image_paths[0]
    records: list[BoxRecord] = []
    categories: dict[int, str] = {}
    for path in label_paths:
        found, names = read_coco(path, root)
        records += found
        for key, name in names.items():
            if categories.get(key, name) != name:
                msg = f'{path}: category {key} is {name!r} here but {categories[key]!r} before'
                raise LabelError(msg)
            categories[key] = name
    table = options.class_table or ClassTable(
        names=tuple(categories[k] for k in sorted(categories)),
        values=tuple(sorted(categories)),
        ignore_index=options.ignore_index,
    )
    lookup = {
        k: table.index_of_label(name, 'COCO categories')
        for k, name in categories.items()
    }
    return detection_chips(records, lambda v: lookup[int(v)], table, options, 'coco')
