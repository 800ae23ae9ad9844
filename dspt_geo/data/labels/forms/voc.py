"""Pascal VOC XML boxes over image chips (files, or their folder)."""

import os
from collections import Counter
from collections.abc import Sequence

from ..chips import list_files
from ..classes import ClassTable
from ..data import LabelledData
from ..formats import read_voc
from .common import OpenOptions
from .detection_chips import detection_chips

__all__ = ('open_voc',)


def open_voc(
    image_paths: Sequence[str], label_paths: Sequence[str], options: OpenOptions
) -> LabelledData:
    """Image chips with Pascal VOC XML boxes."""
    xml_files: list[str] = []
    for path in label_paths:
        if os.path.isdir(path):
            xml_files += [p for _, p in list_files(path, frozenset({'.xml'}))]
        else:
            xml_files.append(path)
    records = read_voc(xml_files, image_paths[0] if image_paths else None)
    names = Counter(label for r in records for label in r.labels)
    table = options.class_table or ClassTable.from_labels(names, options.ignore_index)
    return detection_chips(
        records, lambda v: table.index_of_label(v, 'VOC'), table, options, 'voc'
    )
