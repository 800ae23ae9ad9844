"""Reader of NWPU VHR-10 ground truth: ``(x1,y1),(x2,y2),class`` text files.

The data set (Cheng et al., "Multi-class geospatial object detection and geographic
image classification based on collection of part detectors", ISPRS J. 2014) holds
``positive image set/NNN.jpg`` and one ``ground truth/NNN.txt`` per image, a box a
line: top-left and bottom-right pixel corners, then a class id 1-10.
"""

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ...errors import LabelError
from .classes import ClassTable
from .formats import BoxRecord, annotation_record, check_images_found, locate_image

__all__ = ('NWPU_CLASSES', 'is_nwpu_file', 'nwpu_class_table', 'read_nwpu')

#: Class names of ids 1-10, in the data set's order.
NWPU_CLASSES = (
    'airplane',
    'ship',
    'storage tank',
    'baseball diamond',
    'tennis court',
    'basketball court',
    'ground track field',
    'harbor',
    'bridge',
    'vehicle',
)

_NUMBER = r'\s*(-?\d+(?:\.\d*)?)\s*'
#: One box line, spaces allowed anywhere: ``(563, 478),(630, 573),1``.
_LINE = re.compile(
    rf'^\({_NUMBER},{_NUMBER}\)\s*,\s*\({_NUMBER},{_NUMBER}\)\s*,\s*(\d+)\s*$'
)


def _first_line(path: str) -> str:
    """The first non-blank line of a text file ('' if none or unreadable)."""
    try:
        with open(path, encoding='utf-8', errors='replace') as handle:
            for line in handle:
                if line.strip():
                    return line.strip()
    except OSError:
        pass
    return ''


def is_nwpu_file(path: str | os.PathLike[str]) -> bool:
    """Whether a text file's first box line is NWPU VHR-10's ``(x1,y1),(x2,y2),c``."""
    return _LINE.match(_first_line(os.fspath(path))) is not None


def nwpu_class_table(ignore_index: int) -> ClassTable:
    """The ten NWPU VHR-10 classes, stored as their ids 1-10."""
    return ClassTable(
        names=NWPU_CLASSES,
        values=tuple(range(1, len(NWPU_CLASSES) + 1)),
        ignore_index=ignore_index,
    )


def read_nwpu(
    paths: Sequence[str | os.PathLike[str]], root: str | os.PathLike[str] | None = None
) -> list[BoxRecord]:
    """Boxes of NWPU VHR-10 ground-truth files (one per image).

    Corners are taken as written (``x0, y0, x1, y1`` pixels). Blank lines are
    skipped; the format has no difficult flag.

    Args:
        paths: the ``ground truth/NNN.txt`` files.
        root: folder of the images; ``positive image set`` inside it is looked in
            first (default: the sibling ``positive image set`` of each file's folder).

    Returns:
        one record per file; labels are class names (:data:`NWPU_CLASSES`).

    Raises:
        LabelError: If a line is not ``(x1,y1),(x2,y2),class`` or a class is not 1-10.
        NoRastersFoundError: If an image is not found.
    """
    records, missing = [], []
    cache: dict[str, dict[str, list[str]]] = {}
    for text_path in sorted(str(p) for p in paths):
        boxes, labels = [], []
        with open(text_path, encoding='utf-8', errors='replace') as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                match = _LINE.match(line.strip())
                if match is None or not 1 <= int(match[5]) <= len(NWPU_CLASSES):
                    msg = (
                        f'{text_path} line {number}: {line.strip()!r} is not an NWPU '
                        'VHR-10 box "(x1,y1),(x2,y2),class" with class 1-10'
                    )
                    raise LabelError(msg)
                boxes.append([float(match[k]) for k in range(1, 5)])
                labels.append(NWPU_CLASSES[int(match[5]) - 1])
        parent = Path(text_path).parent
        folders = (
            [os.path.join(root, 'positive image set'), str(root)]
            if root is not None
            else [str(parent.parent / 'positive image set')]
        )
        image = locate_image(Path(text_path).stem, folders, cache)
        if image is None:
            missing.append(Path(text_path).stem)
            continue
        records.append(annotation_record(image, boxes, labels, text_path))
    check_images_found(
        missing,
        'of NWPU VHR-10 ground truth',
        'pass the "positive image set" folder as images',
    )
    return records
