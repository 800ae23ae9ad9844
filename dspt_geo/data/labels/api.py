"""One entry point to labelled data: :func:`open_labelled` picks the reader.

========== =============================================== ==========================
task       images / labels                                 reader (``forms/``)
========== =============================================== ==========================
classify   folder (or .zip) of class folders, no labels    ``class_folders``
classify   chips / CSV or table of chip paths + classes    ``chip_table``
classify   rasters / points or polygons + class column     ``locations``
segment    rasters / label rasters (any CRS, resolution)   ``label_rasters``
segment    rasters / polygons (+ class column)             ``vector_scenes``
segment    image chips / mask chips (values or colours)    ``mask_chips``
detect     rasters / polygons or boxes (+ class column)    ``vector_scenes``
detect     image chips / COCO JSON                         ``coco``
detect     image chips / Pascal VOC XML files or folder    ``voc``
detect     image chips / NWPU VHR-10 ``ground truth``      ``box_text``
detect     image chips / HRSC2016 XML files or folder      ``box_text``
detect     image chips / DOTA ``labelTxt`` files or folder ``box_text``
========== =============================================== ==========================

The form is decided up front, never by trying readers in turn. Each label path is of
one kind (:func:`_kind`): a ``.json`` is COCO when its start has ``images`` and
``annotations`` but no ``features``, else a vector file; an ``.xml`` is HRSC2016
when it has HRSC's ``HRSC_Objects``, else Pascal VOC; a ``.txt`` is NWPU VHR-10 or
DOTA when its first box line has their shape, else a table; other table and vector
suffixes are tables and vectors; a folder of only ``.xml`` or only ``.txt`` files is
of its first file's kind; anything else is rasters. Then, per task:

* classify: no labels, class folders; one table or vector file, a chip table (a
  table with geometries: locations).
* segment: tables and vectors, vector labels; rasters are label rasters when they
  hold a georeferenced raster and so do the images (besides the label files), else
  mask chips (:func:`.forms.label_rasters.matches`).
* detect: COCO, VOC, NWPU VHR-10, HRSC2016 or DOTA when every label path is of
  that one kind; tables and vectors, vector labels.

The class table is read or derived once and shared by every split, so the model's
class indices mean the same in training, validation and prediction.
"""

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from rasterio.crs import CRS

from ...errors import LabelError, NoRastersFoundError
from .classes import DEFAULT_IGNORE_INDEX, ClassTable
from .data import TASKS, LabelledData, PathLike, Task
from .forms import (
    box_text,
    chip_table,
    class_folders,
    coco,
    label_rasters,
    mask_chips,
    vector_scenes,
    voc,
)
from .forms.common import OpenOptions
from .hrsc import is_hrsc_file
from .split import BlockSplit, ColumnSplit, FolderSplit, RandomSplit, SplitSpec
from .vectors import TABLE_EXTENSIONS, VECTOR_EXTENSIONS

__all__ = ('open_labelled',)


def open_labelled(
    task: Task,
    images: PathLike | Sequence[PathLike],
    labels: PathLike | Sequence[PathLike] | None = None,
    class_column: str | None = None,
    split: SplitSpec | Literal['auto'] | None = 'auto',
    *,
    class_table: ClassTable | PathLike | None = None,
    class_name: str | None = None,
    size: int | None = None,
    bands: Sequence[str] | None = None,
    group: str | None = None,
    length: int | None = None,
    stride: int | None = None,
    min_valid_fraction: float = 0.5,
    positive_fraction: float = 0.0,
    background: str | None = 'background',
    colour_coded: bool | None = None,
    ignore_values: Sequence[int] = (),
    ignore_index: int = DEFAULT_IGNORE_INDEX,
    labels_crs: CRS | str | None = None,
    layer: str | int | None = None,
    path_column: str | None = None,
    seed: int = 0,
    label_fraction: float | None = None,
    label_seed: int | None = None,
) -> LabelledData:
    """Open labelled data in whatever form the user has it.

    Args:
        task: ``'classify'``, ``'segment'`` or ``'detect'``.
        images: raster files or folders (searched recursively); for classification
            from class folders, the folder (or ``.zip``) of class folders; for
            COCO / VOC / mask chips, the image chips' folder.
        labels: label rasters, vector files (GeoPackage, GeoJSON, Shapefile, ...),
            a CSV of chip paths or of points, a COCO JSON, or Pascal VOC XML files
            (or their folder). Not needed for class folders.
        class_column: column holding the class (tables and vectors); tables try
            ``class``, ``label``, ... when not given; vectors without one are one
            class.
        split: :class:`FolderSplit`, :class:`ColumnSplit`, :class:`BlockSplit`,
            :class:`RandomSplit`, ``'auto'`` (split folders if the layout has them,
            else a ``split`` column, else blocks where data is georeferenced, else
            random) or None (everything trains).
        class_table: the classes (a :class:`ClassTable` or a JSON/CSV file, see
            :meth:`ClassTable.read`); default: derived from the labels. Needed for
            colour-coded masks. Integer masks without one take class names from
            their sidecars (see :mod:`~dspt_geo.data.labels.sidecars`).
        class_name: name of the one class of vector labels without a class column
            (default: the label file's stem, e.g. ``buildings``, or the folder's
            name; ``object`` for several files).
        size: chip size in pixels: scene chips (default 256, or less where images
            are smaller), location chips (default 64); when given, classification
            chips are resized to it whole, and segmentation and detection chips
            are cut into windows of this size (the last window of a row or column
            flush with the chip's edge; chips smaller padded, the padding
            ignored), never resampled.
        bands: image bands to use, by name (default: all).
        group: sensor group to use when the images hold several band layouts.
        length: training chips per epoch for scenes (default: as many as tile the
            training area).
        stride: grid step of validation chips in pixels (default: *size*).
        min_valid_fraction: scene chips with less valid image are skipped.
        positive_fraction: share of training scene chips that must hold an
            object (see :class:`SceneDataset`).
        background: name of the class of pixels no polygon covers (segmentation
            from vectors); None: such pixels are unlabelled (ignored).
        colour_coded: masks are RGB colours of the class table (default: when
            masks have three bands or more).
        ignore_values: stored mask values that mean "no label".
        ignore_index: mask value for pixels that count for nothing.
        labels_crs: CRS of vector labels or point tables that declare none.
        layer: layer of a multi-layer vector file.
        path_column: chip path column of a chip table (default: found by name).
        seed: seed of splits and chip draws.
        label_fraction: train on this share of the training labels, in (0, 1]
            (the few-label setting): per class for classification (at least one
            each), of images for segmentation and detection chips, of regions
            (blocks) for scenes; validation and test keep all theirs. None: all.
        label_seed: seed of the label fraction's draw (default: *seed*).

    Returns:
        the datasets and what the model needs to know.

    Raises:
        LabelError: If labels do not fit the images or the class table (CRS, extent,
            class column, empty class, unknown mask values).
        NoRastersFoundError: If images or chips are not found.
        IncompatibleRasterError: If images mix band layouts and *group* is not set.
        ValueError: If *task*, *split* or *label_fraction* is invalid.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       *class_name*; *size* cuts segmentation and detection chips into windows;
       *label_fraction* and *label_seed*; random splits of classification data
       are stratified by class.
    """
    if task not in TASKS:
        msg = f'task must be one of {TASKS}, got {task!r}'
        raise ValueError(msg)
    if split not in (None, 'auto') and not isinstance(
        split, FolderSplit | ColumnSplit | BlockSplit | RandomSplit
    ):
        msg = (
            f"split must be a FolderSplit, ColumnSplit, BlockSplit, RandomSplit, 'auto' "
            f'or None, got {split!r}'
        )
        raise ValueError(msg)
    if label_fraction is not None and not 0 < label_fraction <= 1:
        msg = f'label fraction must be in (0, 1], got {label_fraction}'
        raise ValueError(msg)
    image_paths = _as_list(images)
    label_paths = _expand_vector_folders(_as_list(labels))
    table = _class_table(class_table, ignore_values, ignore_index)
    options = OpenOptions(
        task=task,
        class_column=class_column,
        class_name=class_name or _default_class_name(_as_list(labels)),
        split=split,
        class_table=table,
        size=size,
        bands=bands,
        group=group,
        length=length,
        stride=stride,
        min_valid_fraction=min_valid_fraction,
        positive_fraction=positive_fraction,
        background=background,
        colour_coded=colour_coded,
        ignore_values=tuple(ignore_values),
        ignore_index=ignore_index,
        labels_crs=labels_crs,
        layer=layer,
        path_column=path_column,
        seed=seed,
        label_fraction=label_fraction,
        label_seed=seed if label_seed is None else label_seed,
    )
    if not image_paths:
        msg = 'no images given'
        raise NoRastersFoundError(msg)
    kinds = {_kind(p) for p in label_paths}
    match task:
        case 'classify':
            if not label_paths:
                return class_folders.open_class_folders(image_paths, options)
            if kinds <= {'table', 'vector'} and len(label_paths) == 1:
                return chip_table.open_chip_table(image_paths, label_paths[0], options)
            msg = (
                'classification labels are a folder of class folders (give it as '
                'images, no labels) or one table (CSV / GeoPackage) of chip paths '
                f'or locations with a class column; got {label_paths}'
            )
            raise LabelError(msg)
        case 'segment':
            if not label_paths:
                msg = 'segmentation needs labels: label rasters, mask chips or vectors'
                raise LabelError(msg)
            if kinds <= {'vector', 'table'}:
                return vector_scenes.open_vector_scenes(
                    image_paths, label_paths, options
                )
            if label_rasters.matches(image_paths, label_paths):
                return label_rasters.open_label_rasters(
                    image_paths, label_paths, options
                )
            return mask_chips.open_mask_chips(image_paths, label_paths, options)
        case 'detect':
            if not label_paths:
                msg = (
                    'detection needs labels: vectors, a COCO JSON, VOC or HRSC2016 XML '
                    'files, NWPU VHR-10 or DOTA text files'
                )
                raise LabelError(msg)
            if kinds == {'coco'}:
                return coco.open_coco(image_paths, label_paths, options)
            if kinds == {'voc'}:
                return voc.open_voc(image_paths, label_paths, options)
            if len(kinds) == 1 and kinds <= {'nwpu', 'hrsc', 'dota'}:
                return box_text.open_box_text(
                    kinds.pop(), image_paths, label_paths, options
                )
            if kinds <= {'vector', 'table'}:
                return vector_scenes.open_vector_scenes(
                    image_paths, label_paths, options
                )
            msg = f'cannot tell the detection label format of {label_paths}'
            raise LabelError(msg)


def _as_list(paths: PathLike | Sequence[PathLike] | None) -> list[str]:
    """Paths as a list of strings."""
    if paths is None:
        return []
    if isinstance(paths, str | os.PathLike):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def _default_class_name(labels: Sequence[str]) -> str | None:
    """The stem of the one label file (or folder) given, None for several."""
    if len(labels) != 1:
        return None
    path = Path(labels[0])
    return path.name if path.is_dir() else path.stem


def _expand_vector_folders(paths: list[str]) -> list[str]:
    """Folders of vector files replaced by their vector files (sidecars left out)."""
    sidecars = {'.shx', '.dbf', '.prj', '.cpg', '.qmd', '.xml', '.qml', '.sbn', '.sbx'}
    expanded = []
    for path in paths:
        if os.path.isdir(path):
            files = sorted(
                str(p)
                for p in Path(path).rglob('*')
                if p.is_file() and not p.name.startswith('.')
            )
            vectors = [f for f in files if Path(f).suffix.lower() in VECTOR_EXTENSIONS]
            others = [
                f
                for f in files
                if Path(f).suffix.lower() not in VECTOR_EXTENSIONS | sidecars
            ]
            if vectors and not others:
                expanded += vectors
                continue
        expanded.append(path)
    return expanded


def _class_table(
    given: ClassTable | PathLike | None, ignore_values: Sequence[int], ignore_index: int
) -> ClassTable | None:
    """The user's class table, with the ignore settings applied."""
    if given is None:
        return None
    table = (
        given if isinstance(given, ClassTable) else ClassTable.read(given, ignore_index)
    )
    if ignore_values:
        table = dataclasses.replace(table, ignore_values=tuple(ignore_values))
    return table


def _kind(path: str) -> str:
    """What a label path is: vector, table, coco, voc, raster (or a folder of)."""
    suffix = Path(path).suffix.lower()
    if suffix == '.json':
        return 'coco' if coco.matches(path) else 'vector'
    if suffix == '.xml':
        return 'hrsc' if is_hrsc_file(path) else 'voc'
    if suffix == '.txt' and (kind := box_text.text_kind(path)):
        return kind
    if suffix in TABLE_EXTENSIONS:
        return 'table'
    if suffix in VECTOR_EXTENSIONS:
        return 'vector'
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if not n.startswith('.'))
        if names and all(n.lower().endswith('.xml') for n in names):
            return 'hrsc' if is_hrsc_file(os.path.join(path, names[0])) else 'voc'
        if names and all(n.lower().endswith('.txt') for n in names):
            return box_text.text_kind(os.path.join(path, names[0])) or 'raster'
    return 'raster'
