"""Readers of the label layouts users have: class folders, chip tables, COCO, VOC.

Each reader returns plain records (chip path, class or boxes, split named by the
layout) and leaves class tables and datasets to :func:`open_labelled`.
"""

import json
import logging
import os
import re
import xml.etree.ElementTree as ET
import zipfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ...errors import LabelError, NoRastersFoundError
from .chips import CHIP_EXTENSIONS, list_files, zip_location
from .split import SplitName, split_from_path
from .vectors import CLASS_COLUMNS, class_column_values, find_column

__all__ = (
    'BoxRecord',
    'ChipRecord',
    'locate_image',
    'pair_masks',
    'read_chip_table',
    'read_class_folders',
    'read_coco',
    'read_voc',
)

logger = logging.getLogger(__name__)

#: Likely names of the chip path column of a chip table.
PATH_COLUMNS = (
    'path',
    'filepath',
    'file_path',
    'file',
    'filename',
    'file_name',
    'image',
    'chip',
)

#: Suffixes of mask file names beside their image's stem (``tile_01_mask.png``).
_MASK_SUFFIXES = ('', '_mask', '-mask', '_label', '_labels', '-label', '_gt', '_seg')


@dataclass(frozen=True)
class ChipRecord:
    """A classification chip.

    Attributes:
        path: GDAL path of the chip.
        label: its class as written (folder name or table value).
        split: split named by the layout, or None.
    """

    path: str
    label: Any
    split: SplitName | None = None


@dataclass(frozen=True)
class BoxRecord:
    """A detection chip and its boxes.

    Attributes:
        path: GDAL path of the chip.
        boxes: (N, 4) ``x0, y0, x1, y1`` pixel boxes.
        labels: class of each box as written (category id or name).
        split: split named by the layout, or None.
        difficult: (N,) flags of boxes marked difficult, kept as "ignore" boxes
            (no loss, no miss in mAP); None where the format has no such flag.
    """

    path: str
    boxes: npt.NDArray[np.float32]
    labels: list[Any] = field(default_factory=list)
    split: SplitName | None = None
    difficult: npt.NDArray[np.bool_] | None = None


def annotation_record(
    image: str,
    boxes: Sequence[Sequence[float]],
    labels: list[Any],
    label_file: str | os.PathLike[str],
    difficult: Sequence[bool] | None = None,
) -> BoxRecord:
    """The :class:`BoxRecord` of one image's annotation file.

    Args:
        image: the image's path.
        boxes: ``x0, y0, x1, y1`` pixel boxes.
        labels: class of each box as written.
        label_file: the annotation file; its folders name the split.
        difficult: flags of boxes marked difficult, where the format has them.

    Returns:
        the record.
    """
    return BoxRecord(
        path=image,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=labels,
        split=split_from_path(reversed(Path(label_file).parent.parts)),
        difficult=None if difficult is None else np.asarray(difficult, dtype=bool),
    )


def check_images_found(missing: Sequence[str], what: str, hint: str) -> None:
    """Stop when annotation files name images that are not there.

    Args:
        missing: stems of the images not found.
        what: what names them, e.g. ``'of DOTA label files'``.
        hint: what to do.

    Raises:
        NoRastersFoundError: If *missing* is not empty.
    """
    if missing:
        msg = f'{len(missing)} images {what} not found (first: {missing[0]}.*); {hint}'
        raise NoRastersFoundError(msg)


# -- class folders -----------------------------------------------------------------


def _folders(root: str) -> set[str]:
    """Relative paths (``/`` separators) of every folder under *root*."""
    zipped = zip_location(root)
    folders: set[str] = set()
    if zipped is not None:
        archive, inner = zipped
        prefix = inner.strip('/') + '/' if inner.strip('/') else ''
        with zipfile.ZipFile(archive) as handle:
            for name in handle.namelist():
                if not name.startswith(prefix):
                    continue
                parts = name[len(prefix) :].split('/')[:-1]
                for i in range(1, len(parts) + 1):
                    folders.add('/'.join(parts[:i]))
        return folders
    for folder, dirs, _ in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith('.')]
        for name in dirs:
            folders.add((Path(folder) / name).relative_to(root).as_posix())
    return folders


def read_class_folders(root: str | os.PathLike[str]) -> list[ChipRecord]:
    """Chips in class folders: ``root/<class>/...`` or ``root/<split>/<class>/...``.

    Split folders are ``train``/``val``/``test`` or ``trn``/``val``/``tst`` (and
    other spellings); when the root holds any, files outside split folders (e.g.
    unlabelled chips for prediction) are ignored. A root that is itself named like
    a split (``data/val``) puts its chips in that split. *root* may be a ``.zip``
    file.

    Args:
        root: the folder or zip file.

    Returns:
        one record per chip, sorted by path.

    Raises:
        NoRastersFoundError: If *root* holds no chip in a class folder.
        LabelError: If a class folder holds no chip.
    """
    root = str(root)
    files = list_files(root)
    folders = _folders(root)
    tops = {f.split('/')[0] for f in folders}
    split_layout = any(split_from_path([t]) for t in tops)
    depth = 2 if split_layout else 1
    # A root that is itself a split folder (``data/train`` given alone) names the
    # split of all its chips.
    root_split = None if split_layout else split_from_path([PurePosixPath(root).name])
    records: list[ChipRecord] = []
    used: set[str] = set()
    ignored: list[str] = []
    for relative, path in files:
        parts = relative.split('/')
        split = split_from_path(parts[:1]) if split_layout else root_split
        if len(parts) <= depth or (split_layout and split is None):
            ignored.append(relative)
            continue
        records.append(ChipRecord(path=path, label=parts[depth - 1], split=split))
        used.add('/'.join(parts[:depth]))
    if ignored:
        logger.info(
            '%s: ignoring %d chips outside class folders (e.g. %s)',
            root,
            len(ignored),
            ignored[0],
        )
    if not records:
        layout = '<split>/<class>/' if split_layout else '<class>/'
        msg = (
            f'no chip found in class folders of {root}; expected {layout}<chip> with '
            f'chips of type {", ".join(sorted(CHIP_EXTENSIONS))}'
        )
        raise NoRastersFoundError(msg)
    class_folders = {
        f
        for f in folders
        if f.count('/') == depth - 1
        and (not split_layout or split_from_path(f.split('/')[:1]))
    }
    empty = sorted(class_folders - used)
    if empty:
        more = f' (and {len(empty) - 1} more)' if len(empty) > 1 else ''
        msg = (
            f'class folder {empty[0]!r}{more} of {root} holds no chip; add chips '
            f'({", ".join(sorted(CHIP_EXTENSIONS))}) or remove the folder'
        )
        raise LabelError(msg)
    return records


# -- chip tables ---------------------------------------------------------------------


def read_chip_table(
    frame: pd.DataFrame,
    source: str,
    root: str | os.PathLike[str],
    class_column: str | None,
    path_column: str | None = None,
) -> tuple[list[str], pd.Series]:
    """Chip paths and classes of a table of chips.

    Args:
        frame: the table.
        source: the table's file, for messages.
        root: folder that relative paths start from.
        class_column: the class column (default: a column named like one).
        path_column: the path column (default: a column named like one).

    Returns:
        GDAL paths of the chips, and the class column.

    Raises:
        LabelError: If a column is missing (the message lists the columns there
            are) or a class is empty.
        NoRastersFoundError: If a listed chip does not exist.
    """
    column = find_column(frame, path_column, PATH_COLUMNS)
    if column is None or column not in frame.columns:
        msg = (
            f'{source} has no chip path column '
            f'({path_column!r} or one of {", ".join(PATH_COLUMNS)}); its columns '
            f'are {", ".join(map(str, frame.columns))}'
        )
        raise LabelError(msg)
    labels = class_column_values(
        frame, _class_column(frame, class_column, source), source
    )
    paths, missing = [], []
    for value in frame[column].astype(str):
        path = (
            value
            if os.path.isabs(value) or value.startswith('/vsi')
            else os.path.join(root, value)
        )
        if not path.startswith('/vsi') and not os.path.exists(path):
            missing.append(value)
        paths.append(path)
    if missing:
        msg = (
            f'{len(missing)} chips listed in {source} do not exist (first: '
            f'{missing[0]}); paths are read relative to {root}'
        )
        raise NoRastersFoundError(msg)
    return paths, labels


def _class_column(frame: pd.DataFrame, given: str | None, source: str) -> str:
    """The class column, found by name when not given."""
    column = find_column(frame, given, CLASS_COLUMNS)
    if column is None:
        columns = [c for c in frame.columns if c != 'geometry']
        msg = (
            f'{source} has no class column; name it (--class-column) '
            f'among its columns: {", ".join(map(str, columns))}'
        )
        raise LabelError(msg)
    return column


# -- COCO and Pascal VOC ----------------------------------------------------------------


def _image_finder(root: str) -> dict[str, str]:
    """Chip file name (lower case) -> GDAL path, for every chip under *root*."""
    return {PurePosixPath(rel).name.lower(): path for rel, path in list_files(root)}


def _resolve(
    name: str, root: str, finder: dict[str, str] | None
) -> tuple[str | None, dict[str, str] | None]:
    """The chip *name* names, directly under *root* or found by file name."""
    direct = os.path.join(root, name)
    if zip_location(root) is None and os.path.exists(direct):
        return str(Path(direct).resolve()), finder
    if finder is None:
        finder = _image_finder(root)
    return finder.get(PurePosixPath(name.replace('\\', '/')).name.lower()), finder


def locate_image(
    stem: str, folders: Sequence[str], cache: dict[str, dict[str, list[str]]]
) -> str | None:
    """The one image chip named *stem* (any chip extension) in the first folder holding it.

    Used by formats whose label files name their image by stem only (NWPU VHR-10,
    DOTA: ``P0001.txt`` labels ``P0001.png``).

    Args:
        stem: file name without extension.
        folders: where to look, in order (missing folders are passed over).
        cache: folder -> (lower-case stem -> GDAL paths), filled as folders are listed.

    Returns:
        the chip's GDAL path, or None if no folder holds it.

    Raises:
        LabelError: If a folder holds several chips of that stem.
    """
    for folder in folders:
        if folder not in cache:
            if not os.path.exists(folder) and zip_location(folder) is None:
                continue
            stems: dict[str, list[str]] = defaultdict(list)
            for relative, path in list_files(folder):
                stems[PurePosixPath(relative).stem.lower()].append(path)
            cache[folder] = stems
        found = cache[folder].get(stem.lower(), [])
        if len(found) > 1:
            msg = (
                f'{len(found)} images named {stem!r} under {folder} ({found[0]}, '
                f'{found[1]}); give the folder of the labelled images as images'
            )
            raise LabelError(msg)
        if found:
            return found[0]
    return None


def _split_of_file(path: str) -> SplitName | None:
    """Split named by a label file's name (``train.json``, ``instances_val2017``)."""
    tokens = re.split(r'[^A-Za-z0-9]+', Path(path).stem)
    return split_from_path(t.rstrip('0123456789') for t in tokens)


def read_coco(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> tuple[list[BoxRecord], dict[int, str]]:
    """Boxes of a COCO detection JSON.

    Crowd annotations (``iscrowd``) are left out; images without annotations are
    kept as chips without objects.

    Args:
        path: the JSON file.
        root: folder of the images (default: the JSON's folder).

    Returns:
        one record per image (boxes ``x0, y0, x1, y1``; labels are category ids),
        and category id -> name.

    Raises:
        LabelError: If the file is not COCO or refers to unknown categories.
        NoRastersFoundError: If an image is not found.
    """
    path = Path(path)
    root = str(root if root is not None else path.parent)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        msg = f'cannot read COCO file {path}: {error}'
        raise LabelError(msg) from None
    if not isinstance(data, dict) or not {'images', 'annotations'} <= set(data):
        msg = f'{path} is not a COCO file (needs "images" and "annotations")'
        raise LabelError(msg)
    categories = {int(c['id']): str(c['name']) for c in data.get('categories', [])}
    boxes: dict[int, list[list[float]]] = defaultdict(list)
    labels: dict[int, list[int]] = defaultdict(list)
    for annotation in data['annotations']:
        if annotation.get('iscrowd'):
            continue
        category = int(annotation['category_id'])
        if categories and category not in categories:
            msg = (
                f'{path}: annotation {annotation.get("id")} has category {category}, '
                f'which is not among the categories {sorted(categories)}'
            )
            raise LabelError(msg)
        x, y, w, h = (float(v) for v in annotation['bbox'])
        boxes[int(annotation['image_id'])].append([x, y, x + w, y + h])
        labels[int(annotation['image_id'])].append(category)
    if not categories:
        categories = {
            c: str(c) for c in sorted({c for v in labels.values() for c in v})
        }
    split = _split_of_file(str(path))
    records, missing = [], []
    finder: dict[str, str] | None = None
    for image in data['images']:
        found, finder = _resolve(str(image['file_name']), root, finder)
        if found is None:
            missing.append(str(image['file_name']))
            continue
        image_id = int(image['id'])
        records.append(
            BoxRecord(
                path=found,
                boxes=np.asarray(boxes[image_id], dtype=np.float32).reshape(-1, 4),
                labels=labels[image_id],
                split=split
                or split_from_path(Path(str(image['file_name'])).parts[:-1]),
            )
        )
    if missing:
        msg = f'{len(missing)} images of {path} not found under {root} (first: {missing[0]})'
        raise NoRastersFoundError(msg)
    return records, categories


def read_voc(
    paths: Sequence[str | os.PathLike[str]], root: str | os.PathLike[str] | None = None
) -> list[BoxRecord]:
    """Boxes of Pascal VOC XML files (one per image).

    VOC corners are 1-based pixel indices, inclusive; they become ``x0 = xmin - 1,
    y0 = ymin - 1, x1 = xmax, y1 = ymax``.

    Args:
        paths: the XML files.
        root: folder of the images (default: each XML's folder, then a sibling
            ``JPEGImages`` folder).

    Returns:
        one record per XML file (labels are class names).

    Raises:
        LabelError: If a file is not VOC XML.
        NoRastersFoundError: If an image is not found.
    """
    records, missing = [], []
    finders: dict[str, dict[str, str] | None] = {}
    for xml_path in sorted(str(p) for p in paths):
        try:
            tree = ET.parse(xml_path).getroot()
        except (OSError, ET.ParseError) as error:
            msg = f'cannot read VOC file {xml_path}: {error}'
            raise LabelError(msg) from None
        filename = tree.findtext('filename')
        if tree.tag != 'annotation' or not filename:
            msg = f'{xml_path} is not Pascal VOC XML (<annotation> with <filename>)'
            raise LabelError(msg)
        boxes, labels = [], []
        for item in tree.iter('object'):
            box = item.find('bndbox')
            name = item.findtext('name')
            if box is None or not name:
                msg = f'{xml_path}: an <object> lacks <name> or <bndbox>'
                raise LabelError(msg)
            xmin, ymin, xmax, ymax = (
                float(box.findtext(k) or 'nan')
                for k in ('xmin', 'ymin', 'xmax', 'ymax')
            )
            boxes.append([xmin - 1, ymin - 1, xmax, ymax])
            labels.append(name.strip())
        folders = [str(root)] if root is not None else [
            str(Path(xml_path).parent), str(Path(xml_path).parent.parent / 'JPEGImages')
        ]  # fmt: skip
        found = None
        for folder in folders:
            if not os.path.exists(folder) and zip_location(folder) is None:
                continue
            found, finders[folder] = _resolve(filename, folder, finders.get(folder))
            if found:
                break
        if found is None:
            missing.append(filename)
            continue
        parts = Path(xml_path).parts[:-1]
        records.append(
            BoxRecord(
                path=found,
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                labels=labels,
                split=split_from_path(reversed(parts)),
            )
        )
    if missing:
        msg = (
            f'{len(missing)} images named in VOC files not found (first: {missing[0]}); '
            'pass the image folder as images'
        )
        raise NoRastersFoundError(msg)
    return records


# -- mask chips ------------------------------------------------------------------------


def pair_masks(
    images: Sequence[tuple[str, str]], masks: Sequence[tuple[str, str]]
) -> list[tuple[str, str, SplitName | None]]:
    """Pair image chips with mask chips by file name stem.

    A mask pairs with an image whose stem it equals, or extends by ``_mask``,
    ``_label``, ``_gt`` and the like; where several images share a stem, the
    relative folder must match too.

    Args:
        images: (relative path, GDAL path) of the image chips.
        masks: (relative path, GDAL path) of the mask chips.

    Returns:
        (image path, mask path, split named by the image's folders) triples.

    Raises:
        LabelError: If no image has a mask.
    """
    by_key: dict[str, str] = {}
    for relative, path in masks:
        stem = PurePosixPath(relative).with_suffix('').as_posix().lower()
        by_key[stem] = path
        by_key.setdefault(PurePosixPath(stem).name, path)
    pairs, unpaired = [], []
    for relative, path in images:
        stem = PurePosixPath(relative).with_suffix('').as_posix().lower()
        name = PurePosixPath(stem).name
        mask = None
        for suffix in _MASK_SUFFIXES:
            mask = by_key.get(stem + suffix) or by_key.get(name + suffix)
            if mask is not None:
                break
        if mask is None:
            unpaired.append(relative)
            continue
        pairs.append((path, mask, split_from_path(PurePosixPath(relative).parts[:-1])))
    if not pairs:
        msg = (
            'no image chip has a mask: masks are paired by file name (image '
            "'a.png' with mask 'a.png' or 'a_mask.png')"
        )
        raise LabelError(msg)
    if unpaired:
        logger.warning(
            '%d image chips have no mask and are left out (e.g. %s)',
            len(unpaired),
            unpaired[0],
        )
    return pairs
