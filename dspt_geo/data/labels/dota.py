"""Reader of DOTA (v1.0, v1.5) labels: oriented quadrilaterals in ``labelTxt`` files.

DOTA (Xia et al., "DOTA: A large-scale dataset for object detection in aerial
images", CVPR 2018) ships ``images/P0001.png`` and ``labelTxt/P0001.txt``: optional
``imagesource:...`` and ``gsd:...`` header lines, then one object a line,
``x1 y1 x2 y2 x3 y3 x4 y4 class difficult`` (corners clockwise, pixels).
"""

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import LabelError
from .formats import BoxRecord, annotation_record, check_images_found, locate_image

__all__ = ('is_dota_file', 'read_dota')

#: Header lines before the objects.
_HEADERS = ('imagesource:', 'gsd:')

_NUMBER = r'-?\d+(?:\.\d*)?'
#: One object line: eight corner coordinates, a class, an optional difficult flag.
_LINE = re.compile(rf'^((?:{_NUMBER}\s+){{8}})(\S+)(?:\s+(\d+))?\s*$')


def is_dota_file(path: str | os.PathLike[str]) -> bool:
    """Whether a text file starts with DOTA's header or an object line."""
    try:
        with open(path, encoding='utf-8', errors='replace') as handle:
            for line in handle:
                text = line.strip()
                if text:
                    return text.startswith(_HEADERS) or _LINE.match(text) is not None
    except OSError:
        pass
    return False


def read_dota(
    paths: Sequence[str | os.PathLike[str]], root: str | os.PathLike[str] | None = None
) -> list[BoxRecord]:
    """Boxes of DOTA ``labelTxt`` files (one per image).

    Each quadrilateral becomes its axis-aligned bounds (min and max of the four
    corners); :class:`~dspt_geo.data.labels.ChipDetectionDataset` clips them to
    the image. ``difficult`` 1 flags the object (a missing flag reads as 0).

    Args:
        paths: the ``labelTxt/*.txt`` files.
        root: folder of the images (default: each file's sibling ``images``).

    Returns:
        one record per file; labels are the class names as written
        (``plane``, ``small-vehicle``, ...).

    Raises:
        LabelError: If a line is not a DOTA object.
        NoRastersFoundError: If an image is not found.
    """
    records, missing = [], []
    cache: dict[str, dict[str, list[str]]] = {}
    for text_path in sorted(str(p) for p in paths):
        boxes, labels, difficult = [], [], []
        with open(text_path, encoding='utf-8', errors='replace') as handle:
            for number, line in enumerate(handle, start=1):
                text = line.strip()
                if not text or text.startswith(_HEADERS):
                    continue
                match = _LINE.match(text)
                if match is None:
                    msg = (
                        f'{text_path} line {number}: {text!r} is not a DOTA object '
                        '"x1 y1 x2 y2 x3 y3 x4 y4 class difficult"'
                    )
                    raise LabelError(msg)
                corners = np.asarray(match[1].split(), dtype=np.float32).reshape(4, 2)
                boxes.append([*corners.min(axis=0), *corners.max(axis=0)])
                labels.append(match[2])
                difficult.append(match[3] not in {None, '0'})
        parent = Path(text_path).parent
        folders = [str(root)] if root is not None else [str(parent.parent / 'images')]
        image = locate_image(Path(text_path).stem, folders, cache)
        if image is None:
            missing.append(Path(text_path).stem)
            continue
        records.append(annotation_record(image, boxes, labels, text_path, difficult))
    check_images_found(
        missing, 'of DOTA label files', 'pass the images folder as images'
    )
    return records
