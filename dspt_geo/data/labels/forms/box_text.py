"""The paper's detection sets in their own formats: NWPU VHR-10, HRSC2016, DOTA.

Each has its own reader (:mod:`..nwpu`, :mod:`..hrsc`, :mod:`..dota`) and its own
cheap file check (:func:`text_kind` for the text formats).
"""

import os
from collections import Counter
from collections.abc import Sequence

from ..chips import list_files
from ..classes import ClassTable
from ..data import LabelledData
from ..dota import is_dota_file, read_dota
from ..hrsc import read_hrsc
from ..nwpu import is_nwpu_file, nwpu_class_table, read_nwpu
from .common import OpenOptions
from .detection_chips import detection_chips

__all__ = ('open_box_text', 'text_kind')


def text_kind(path: str) -> str | None:
    """'nwpu' or 'dota' for a box text file of those data sets, else None."""
    if is_nwpu_file(path):
        return 'nwpu'
    return 'dota' if is_dota_file(path) else None


def open_box_text(
    kind: str,
    image_paths: Sequence[str],
    label_paths: Sequence[str],
    options: OpenOptions,
) -> LabelledData:
    """Image chips with NWPU VHR-10, HRSC2016 or DOTA boxes (files or folders)."""
    suffix = '.xml' if kind == 'hrsc' else '.txt'
    files: list[str] = []
    for path in label_paths:
        if os.path.isdir(path):
            files += [p for _, p in list_files(path, frozenset({suffix}))]
        else:
            files.append(path)
    reader = {'nwpu': read_nwpu, 'hrsc': read_hrsc, 'dota': read_dota}[kind]
    records = reader(files, image_paths[0])
    names = Counter(label for r in records for label in r.labels)
    table = options.class_table or (
        nwpu_class_table(options.ignore_index)
        if kind == 'nwpu'
        else ClassTable.from_labels(names, options.ignore_index)
    )
    return detection_chips(
        records, lambda v: table.index_of_label(v, kind), table, options, kind
    )
