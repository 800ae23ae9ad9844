"""Reader of HRSC2016 ship annotations: one ``HRSC_Image`` XML file per image.

HRSC2016 (Liu et al., "A high resolution optical satellite image dataset for ship
recognition and some new baselines", ICPRAM 2017) ships ``AllImages/<id>.bmp`` and
``Annotations/<id>.xml``; each ``HRSC_Objects/HRSC_Object`` has an axis-aligned box
(``box_xmin`` ... ``box_ymax``), a rotated box (``mbox_cx/cy/w/h/ang``, angle in
radians), a ``Class_ID`` and a ``difficult`` flag.
"""

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from ...errors import LabelError
from .formats import BoxRecord, annotation_record, check_images_found, locate_image

__all__ = ('is_hrsc_file', 'read_hrsc')


def is_hrsc_file(path: str | os.PathLike[str]) -> bool:
    """Whether an XML file's root element is ``HRSC_Image`` (read from its start)."""
    try:
        with open(path, encoding='utf-8', errors='replace') as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return '<HRSC_Image' in head


def _box(item: ET.Element, source: str) -> list[float]:
    """``x0, y0, x1, y1`` of an object: its ``box_*``, else its rotated box's bounds."""
    corners = [
        (item.findtext(k) or '').strip()
        for k in ('box_xmin', 'box_ymin', 'box_xmax', 'box_ymax')
    ]
    rotated = [
        (item.findtext(k) or '').strip()
        for k in ('mbox_cx', 'mbox_cy', 'mbox_w', 'mbox_h', 'mbox_ang')
    ]
    try:
        if all(corners):
            return [float(c) for c in corners]
        if all(rotated):
            cx, cy, w, h, angle = (float(v) for v in rotated)
            half_w = (abs(w * math.cos(angle)) + abs(h * math.sin(angle))) / 2
            half_h = (abs(w * math.sin(angle)) + abs(h * math.cos(angle))) / 2
            return [cx - half_w, cy - half_h, cx + half_w, cy + half_h]
    except ValueError:
        pass
    msg = (
        f'{source}: an HRSC_Object has no number in box_xmin..box_ymax nor in '
        'mbox_cx..mbox_ang'
    )
    raise LabelError(msg)


def read_hrsc(
    paths: Sequence[str | os.PathLike[str]], root: str | os.PathLike[str] | None = None
) -> list[BoxRecord]:
    """Boxes of HRSC2016 XML files (one per image).

    Boxes are ``box_xmin, box_ymin, box_xmax, box_ymax`` as written (objects with
    only a rotated box get its axis-aligned bounds); ``difficult`` objects are
    flagged. Labels are the ``Class_ID`` values as written (``100000001`` ... in
    the release; ``sysdata.xml`` names them): give a class table to name or merge
    them (all ``ship`` for the usual one-class task).

    Args:
        paths: the XML files.
        root: folder of the images (default: each file's sibling ``AllImages``).

    Returns:
        one record per XML file.

    Raises:
        LabelError: If a file is not HRSC2016 XML or an object has no box.
        NoRastersFoundError: If an image is not found.
    """
    records, missing = [], []
    cache: dict[str, dict[str, list[str]]] = {}
    for xml_path in sorted(str(p) for p in paths):
        try:
            tree = ET.parse(xml_path).getroot()
        except (OSError, ET.ParseError) as error:
            msg = f'cannot read HRSC2016 file {xml_path}: {error}'
            raise LabelError(msg) from None
        if tree.tag != 'HRSC_Image':
            msg = f'{xml_path} is not HRSC2016 XML (<HRSC_Image>)'
            raise LabelError(msg)
        stem = (tree.findtext('Img_FileName') or Path(xml_path).stem).strip()
        boxes, labels, difficult = [], [], []
        for item in tree.iterfind('HRSC_Objects/HRSC_Object'):
            boxes.append(_box(item, xml_path))
            labels.append((item.findtext('Class_ID') or '').strip() or 'ship')
            difficult.append(
                (item.findtext('difficult') or '0').strip() not in {'', '0'}
            )
        parent = Path(xml_path).parent
        folders = (
            [str(root)] if root is not None else [str(parent.parent / 'AllImages')]
        )
        image = locate_image(stem, folders, cache)
        if image is None:
            missing.append(stem)
            continue
        records.append(annotation_record(image, boxes, labels, xml_path, difficult))
    check_images_found(
        missing, 'named in HRSC2016 files', 'pass the AllImages folder as images'
    )
    return records
