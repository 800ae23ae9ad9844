"""One entry point to labelled data: :func:`open_labelled` picks the reader.

========== =============================================== =========================
task       images / labels                                 reader
========== =============================================== =========================
classify   folder (or .zip) of class folders, no labels    class folders
classify   chips / CSV or table of chip paths + classes    chip table
classify   rasters / points or polygons + class column     locations
segment    rasters / label rasters (any CRS, resolution)   label rasters
segment    rasters / polygons (+ class column)             vector labels
segment    image chips / mask chips (values or colours)    mask chips
detect     rasters / polygons or boxes (+ class column)    vector labels
detect     image chips / COCO JSON                         COCO
detect     image chips / Pascal VOC XML files or folder    VOC
detect     image chips / NWPU VHR-10 ``ground truth``      NWPU VHR-10
detect     image chips / HRSC2016 XML files or folder      HRSC2016
detect     image chips / DOTA ``labelTxt`` files or folder DOTA
========== =============================================== =========================

The class table is read or derived once and shared by every split, so the model's
class indices mean the same in training, validation and prediction.
"""

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio
import shapely
import torch
from rasterio.crs import CRS
from torch import Tensor
from torch.utils.data import Dataset

from ...errors import (
    EmptyRasterError,
    IncompatibleRasterError,
    LabelError,
    NoRastersFoundError,
)
from ...task import TASKS, Task
from ..dataset import SensorDataset
from ..discovery import RasterFile, report_skipped, scan_rasters
from ..groups import group_rasters
from ..statistics import BandStatistics, compute_statistics
from .chips import (
    ChipClassificationDataset,
    ChipDetectionDataset,
    ChipSegmentationDataset,
    chip_info,
    chip_shape,
    list_files,
    zip_location,
)
from .classes import DEFAULT_IGNORE_INDEX, ClassTable
from .dota import is_dota_file, read_dota
from .formats import (
    CLASS_COLUMNS,
    SPLIT_COLUMNS,
    BoxRecord,
    find_column,
    pair_masks,
    read_chip_table,
    read_class_folders,
    read_coco,
    read_voc,
)
from .hrsc import is_hrsc_file, read_hrsc
from .nwpu import is_nwpu_file, nwpu_class_table, read_nwpu
from .rasters import RasterLabels, scan_label_values
from .scenes import (
    LocationClassificationDataset,
    SceneDataset,
    fits_chip,
    scene_cells,
    scene_pieces,
)
from .sidecars import mask_palette, mask_table, matches_by_colour
from .split import (
    SPLITS,
    BlockSplit,
    ColumnSplit,
    FolderSplit,
    RandomSplit,
    SplitName,
    SplitSpec,
    assign_blocks,
    block_keys,
    random_assign,
    split_from_path,
    split_from_value,
    summarise,
)
from .vectors import (
    TABLE_EXTENSIONS,
    VECTOR_EXTENSIONS,
    VectorLabels,
    class_column_values,
    read_table,
    reproject_labels,
    resolve_column,
)

__all__ = (
    'TASKS',
    'LabelledData',
    'Task',
    'collate_labelled',
    'labelled_statistics',
    'open_labelled',
)

logger = logging.getLogger(__name__)

#: Default chip size (pixels) of scene chips and of location chips.
_SCENE_SIZE = 256
_LOCATION_SIZE = 64

PathLike = str | os.PathLike[str]


@dataclass
class LabelledData:
    """Labelled data opened for one fine-tuning task.

    Attributes:
        task: ``'classify'``, ``'segment'`` or ``'detect'``.
        class_table: the classes, shared by every split.
        bands: band names of the images, in order.
        train: the training dataset.
        val: the validation dataset, or None.
        test: the test dataset, or None.
        reader: which reader opened the data (``'class-folders'``,
            ``'chip-table'``, ``'locations'``, ``'label-rasters'``,
            ``'vector-labels'``, ``'mask-chips'``, ``'coco'``, ``'voc'``,
            ``'nwpu'``, ``'hrsc'``, ``'dota'``).
        images: the georeferenced images, where there are (statistics come from
            them).
    """

    task: Task
    class_table: ClassTable
    bands: tuple[str, ...]
    train: Dataset[dict[str, Tensor]]
    val: Dataset[dict[str, Tensor]] | None = None
    test: Dataset[dict[str, Tensor]] | None = None
    reader: str = ''
    images: SensorDataset | None = None

    @property
    def in_chans(self) -> int:
        """Number of image bands."""
        return len(self.bands)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return self.class_table.num_classes

    def split(self, name: SplitName) -> Dataset[dict[str, Tensor]] | None:
        """The dataset of split *name*."""
        return {'train': self.train, 'val': self.val, 'test': self.test}[name]

    def metadata(self) -> dict[str, Any]:
        """What travels with the model: task, bands and class table (JSON-ready)."""
        return {
            'task': self.task,
            'bands': list(self.bands),
            'in_chans': self.in_chans,
            'num_classes': self.num_classes,
            'class_table': self.class_table.to_dict(),
        }

    def statistics(self, **kwargs: Any) -> BandStatistics:
        """Per-band normalisation statistics (see :func:`labelled_statistics`)."""
        return labelled_statistics(self, **kwargs)


# -- the entry point ---------------------------------------------------------------


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

    Returns:
        the datasets and what the model needs to know.

    Raises:
        LabelError: If labels do not fit the images or the class table (CRS, extent,
            class column, empty class, unknown mask values).
        NoRastersFoundError: If images or chips are not found.
        IncompatibleRasterError: If images mix band layouts and *group* is not set.
        ValueError: If *task* or *split* is invalid.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       *class_name*; *size* cuts segmentation and detection chips into windows.
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
    image_paths = _as_list(images)
    label_paths = _expand_vector_folders(_as_list(labels))
    table = _class_table(class_table, ignore_values, ignore_index)
    options = _Options(
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
    )
    if not image_paths:
        msg = 'no images given'
        raise NoRastersFoundError(msg)
    kinds = {_kind(p) for p in label_paths}
    match task:
        case 'classify':
            if not label_paths:
                return _open_class_folders(image_paths, options)
            if kinds <= {'table', 'vector'} and len(label_paths) == 1:
                return _open_classification_table(image_paths, label_paths[0], options)
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
                return _open_vector_scenes(image_paths, label_paths, options)
            return _open_mask_labels(image_paths, label_paths, options)
        case 'detect':
            if not label_paths:
                msg = (
                    'detection needs labels: vectors, a COCO JSON, VOC or HRSC2016 XML '
                    'files, NWPU VHR-10 or DOTA text files'
                )
                raise LabelError(msg)
            if kinds == {'coco'}:
                return _open_coco(image_paths, label_paths, options)
            if kinds == {'voc'}:
                return _open_voc(image_paths, label_paths, options)
            if len(kinds) == 1 and kinds <= {'nwpu', 'hrsc', 'dota'}:
                return _open_dataset_boxes(
                    kinds.pop(), image_paths, label_paths, options
                )
            if kinds <= {'vector', 'table'}:
                return _open_vector_scenes(image_paths, label_paths, options)
            msg = f'cannot tell the detection label format of {label_paths}'
            raise LabelError(msg)


@dataclass(frozen=True)
class _Options:
    """:func:`open_labelled`'s keyword arguments, passed to the readers."""

    task: Task
    class_column: str | None
    class_name: str | None
    split: SplitSpec | Literal['auto'] | None
    class_table: ClassTable | None
    size: int | None
    bands: Sequence[str] | None
    group: str | None
    length: int | None
    stride: int | None
    min_valid_fraction: float
    positive_fraction: float
    background: str | None
    colour_coded: bool | None
    ignore_values: tuple[int, ...]
    ignore_index: int
    labels_crs: CRS | str | None
    layer: str | int | None
    path_column: str | None
    seed: int


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
        return 'coco' if _looks_like_coco(path) else 'vector'
    if suffix == '.xml':
        return 'hrsc' if is_hrsc_file(path) else 'voc'
    if suffix == '.txt' and (kind := _box_text_kind(path)):
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
            return _box_text_kind(os.path.join(path, names[0])) or 'raster'
    return 'raster'


def _box_text_kind(path: str) -> str | None:
    """'nwpu' or 'dota' for a box text file of those data sets, else None."""
    if is_nwpu_file(path):
        return 'nwpu'
    return 'dota' if is_dota_file(path) else None


def _looks_like_coco(path: str) -> bool:
    """Whether a JSON file is COCO (read only its start: GeoJSON may be large)."""
    with open(path, encoding='utf-8') as handle:
        head = handle.read(1 << 16)
    return '"annotations"' in head and '"images"' in head and '"features"' not in head


# -- splits ----------------------------------------------------------------------------


def _assign_splits(
    spec: SplitSpec | Literal['auto'] | None,
    count: int,
    *,
    folders: Sequence[SplitName | None] | None = None,
    frame: pd.DataFrame | None = None,
    locations: Sequence[tuple[str, float, float] | None] | None = None,
    block_size: float | None = None,
    seed: int = 0,
    what: str = 'chips',
) -> list[SplitName]:
    """The split of each of *count* items under *spec*.

    Args:
        spec: the split asked for.
        count: number of items.
        folders: split named by each item's folders (None where none).
        frame: the label table (for a column split).
        locations: (CRS, x, y) of each item, for a block split.
        block_size: block size when the :class:`BlockSplit` leaves it open.
        seed: seed of an automatic split.
        what: what the items are, for messages.

    Returns:
        one split per item.

    Raises:
        LabelError: If the split does not fit the data.
    """
    if spec is None:
        return ['train'] * count
    if spec == 'auto':
        if folders is not None and count and all(folders):
            spec = FolderSplit()
        elif frame is not None and find_column(frame, None, SPLIT_COLUMNS):
            spec = ColumnSplit(str(find_column(frame, None, SPLIT_COLUMNS)))
        elif locations is not None and all(locations):
            spec = BlockSplit(size=block_size, seed=seed)
        else:
            logger.warning(
                '%s have no split folders, split column or location: splitting them '
                'at random (near-duplicate chips may leak into validation)',
                what,
            )
            spec = RandomSplit(seed=seed)
    match spec:
        case FolderSplit():
            names = list(folders or [None] * count)
            outside = [i for i, s in enumerate(names) if s is None]
            if outside:
                msg = (
                    f'{len(outside)} {what} are not in a train/val/test (or trn/val/tst) '
                    'folder; arrange them so, or choose another split'
                )
                raise LabelError(msg)
            return [s for s in names if s is not None]
        case ColumnSplit(column=column):
            if frame is None:
                msg = f'a column split ({column!r}) needs a label table'
                raise LabelError(msg)
            values = class_column_values(frame, column, what, 'split')
            return [split_from_value(v, f'split column {column!r}') for v in values]
        case BlockSplit():
            if locations is None or not all(locations):
                msg = (
                    f'{what} without a location (no CRS) cannot be split in blocks; '
                    'use --split random, or train/val/test folders'
                )
                raise LabelError(msg)
            size = spec.size or block_size
            if size is None:
                msg = 'a block split needs a block size in CRS units (--split blocks:SIZE)'
                raise ValueError(msg)
            places = [loc for loc in locations if loc is not None]
            keys = [
                (crs, *key)
                for (crs, _, _), key in zip(
                    places,
                    block_keys([p[1] for p in places], [p[2] for p in places], size),
                    strict=True,
                )
            ]
            splits = assign_blocks(
                keys, spec.val_fraction, spec.test_fraction, spec.seed
            )
            return [splits[key] for key in keys]
        case RandomSplit():
            return random_assign(
                count, spec.val_fraction, spec.test_fraction, spec.seed
            )


def _per_split(
    splits: Sequence[SplitName],
    build: Callable[[list[int]], Dataset[dict[str, Tensor]]],
) -> dict[SplitName, Dataset[dict[str, Tensor]] | None]:
    """One dataset per split that has items, built from the items' positions.

    Raises:
        LabelError: If no item is left for training.
    """
    datasets: dict[SplitName, Dataset[dict[str, Tensor]] | None] = {}
    for name in SPLITS:
        chosen = [i for i, split in enumerate(splits) if split == name]
        datasets[name] = build(chosen) if chosen else None
    if datasets['train'] is None:
        msg = f'the split leaves nothing for training ({summarise(list(splits))})'
        raise LabelError(msg)
    return datasets


def _chip_data(
    task: Task,
    table: ClassTable,
    datasets: dict[SplitName, Dataset[dict[str, Tensor]] | None],
    reader: str,
) -> LabelledData:
    """Chip datasets per split as :class:`LabelledData`; bands from the training chips."""
    train = datasets['train']
    assert train is not None, 'checked by _per_split'
    return LabelledData(
        task=task,
        class_table=table,
        bands=train.bands,  # type: ignore[attr-defined]
        train=train,
        val=datasets['val'],
        test=datasets['test'],
        reader=reader,
    )


def _log_splits(reader: str, splits: Sequence[SplitName]) -> None:
    """Log the split sizes."""
    logger.info('%s: %s', reader, summarise(list(splits)))


def _check_classes(
    table: ClassTable, labels: Sequence[int], splits: Sequence[SplitName]
) -> None:
    """Warn about classes with no training sample."""
    trained = {label for label, s in zip(labels, splits, strict=True) if s == 'train'}
    absent = [name for i, name in enumerate(table.names) if i not in trained]
    if absent:
        logger.warning('classes %s have no training sample', absent)


# -- classification --------------------------------------------------------------------


def _chip_locations(paths: Sequence[str]) -> list[tuple[str, float, float] | None]:
    """(CRS, x, y) of each chip's centre, None for chips without a CRS."""
    locations: list[tuple[str, float, float] | None] = []
    for path in paths:
        info = chip_info(path)
        locations.append((info.crs, *info.centre) if info.crs and info.centre else None)
    return locations


def _chip_block_size(paths: Sequence[str], options: _Options) -> float | None:
    """Default block side for georeferenced chips: four chip widths."""
    if not isinstance(options.split, BlockSplit) and options.split != 'auto':
        return None
    if chip_info(paths[0]).crs is None:
        return None
    with rasterio.open(paths[0]) as src:
        return float(4 * max(src.width * abs(src.res[0]), src.height * abs(src.res[1])))


def _needs_locations(
    options: _Options,
    folders: Sequence[SplitName | None],
    frame: pd.DataFrame | None = None,
) -> bool:
    """Whether the split asked for needs chip locations (reads every header)."""
    if isinstance(options.split, BlockSplit):
        return True
    has_column = frame is not None and find_column(frame, None, SPLIT_COLUMNS)
    return options.split == 'auto' and not has_column and not (folders and all(folders))


def _open_class_folders(roots: Sequence[str], options: _Options) -> LabelledData:
    """Chips in class folders."""
    records = [record for root in roots for record in read_class_folders(root)]
    table = options.class_table or ClassTable.from_labels(
        (r.label for r in records), options.ignore_index, numeric=False
    )
    labels = [table.index_of_label(r.label, r.path) for r in records]
    paths = [r.path for r in records]
    folders = [r.split for r in records]
    locations = _chip_locations(paths) if _needs_locations(options, folders) else None
    splits = _assign_splits(
        options.split,
        len(records),
        folders=folders,
        locations=locations,
        block_size=_chip_block_size(paths, options) if locations else None,
        seed=options.seed,
        what='class-folder chips',
    )
    _check_classes(table, labels, splits)
    _log_splits('class folders', splits)
    return _chip_classification(paths, labels, splits, table, options, 'class-folders')


def _chip_classification(
    paths: Sequence[str],
    labels: Sequence[int],
    splits: Sequence[SplitName],
    table: ClassTable,
    options: _Options,
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
    datasets = _per_split(
        splits,
        lambda chosen: ChipClassificationDataset(
            [paths[k] for k in chosen],
            [labels[k] for k in chosen],
            table,
            size=options.size,
        ),
    )
    return _chip_data('classify', table, datasets, reader)


def _open_classification_table(
    image_paths: Sequence[str], table_path: str, options: _Options
) -> LabelledData:
    """A table of chip paths, or of locations over rasters."""
    frame = read_table(table_path, options.layer, options.labels_crs)
    if isinstance(frame, gpd.GeoDataFrame):
        return _open_locations(image_paths, frame, table_path, options)
    root = image_paths[0] if image_paths else str(Path(table_path).parent)
    if not os.path.isdir(root) and zip_location(root) is None:
        root = str(Path(table_path).parent)
    paths, values = read_chip_table(
        frame, table_path, root, options.class_column, options.path_column
    )
    table = options.class_table or ClassTable.from_labels(values, options.ignore_index)
    labels = [table.index_of_label(v, table_path) for v in values]
    folders = [_relative_split(p, root) for p in paths]
    needed = _needs_locations(options, folders, frame)
    locations = _chip_locations(paths) if needed else None
    splits = _assign_splits(
        options.split,
        len(paths),
        folders=folders,
        frame=frame,
        locations=locations,
        block_size=_chip_block_size(paths, options) if locations else None,
        seed=options.seed,
        what=f'chips of {table_path}',
    )
    _check_classes(table, labels, splits)
    _log_splits(table_path, splits)
    return _chip_classification(paths, labels, splits, table, options, 'chip-table')


def _relative_split(path: str, root: str) -> SplitName | None:
    """Split named by the folders of *path* below *root*."""
    try:
        parts = Path(path).resolve().relative_to(Path(root).resolve()).parts[:-1]
    except ValueError:
        return None
    return split_from_path(parts)


def _open_locations(
    image_paths: Sequence[str], frame: gpd.GeoDataFrame, source: str, options: _Options
) -> LabelledData:
    """Chips centred on labelled points or polygons over rasters."""
    images = _open_images(image_paths, options, exclude=())
    column = find_column(frame, options.class_column, CLASS_COLUMNS)
    if column is None:
        columns = [c for c in frame.columns if c != frame.geometry.name]
        msg = (
            f'{source} has no class column; name it (--class-column) '
            f'among its columns: {", ".join(map(str, columns))}'
        )
        raise LabelError(msg)
    column = resolve_column(frame, column, source)
    class_column_values(frame, column, source)
    frame = reproject_labels(frame, images.crs, list(images.index.geometry), source)
    points = shapely.get_coordinates(frame.geometry.representative_point())
    on_image = _on_images(points, images)
    if not on_image.all():
        logger.warning(
            '%s: %d locations (polygon centres) lie off the images and are ignored',
            source,
            int((~on_image).sum()),
        )
        frame, points = frame[on_image], points[on_image]
    values = frame[column].tolist()
    table = options.class_table or ClassTable.from_labels(values, options.ignore_index)
    labels = [table.index_of_label(v, source) for v in values]
    size = options.size or _LOCATION_SIZE
    crs = images.crs.to_string()
    locations = [(crs, float(x), float(y)) for x, y in points]
    splits = _assign_splits(
        options.split,
        len(labels),
        frame=frame,
        locations=locations,
        block_size=4 * size * max(images.res),
        seed=options.seed,
        what=f'locations of {source}',
    )
    _check_classes(table, labels, splits)
    _log_splits(source, splits)
    datasets = _per_split(
        splits,
        lambda chosen: LocationClassificationDataset(
            images, points[chosen], [labels[k] for k in chosen], table, size
        ),
    )
    train = datasets['train']
    assert train is not None, 'checked by _per_split'
    return LabelledData(
        task='classify',
        class_table=table,
        bands=tuple(images.bands),
        train=train,
        val=datasets['val'],
        test=datasets['test'],
        reader='locations',
        images=images,
    )


def _on_images(
    points: npt.NDArray[np.float64], images: SensorDataset
) -> npt.NDArray[np.bool_]:
    """Which points lie on an image footprint."""
    boxes = np.array([g.bounds for g in images.index.geometry]).reshape(-1, 4)
    x, y = points[:, :1], points[:, 1:2]
    inside = (
        (boxes[:, 0] <= x) & (x < boxes[:, 2]) & (boxes[:, 1] < y) & (y <= boxes[:, 3])
    )
    return np.asarray(inside.any(axis=1))


# -- georeferenced scenes ----------------------------------------------------------------


def _open_images(
    paths: Sequence[str], options: _Options, exclude: Sequence[str]
) -> SensorDataset:
    """The images' sensor dataset (one band layout), label files left out.

    Files skipped are reported only when the images are used: image chips without
    a CRS are not skipped but read as chips by the caller.
    """
    scan = scan_rasters(paths, report=False)
    excluded = [_resolved(p) for p in exclude]

    def is_label(path: str) -> bool:
        path = _resolved(path)
        return any(path == ex or path.startswith(ex + os.sep) for ex in excluded)

    rasters = [r for r in scan.rasters if not any(map(is_label, r.paths))]
    if not rasters:
        msg = f'no image raster in {", ".join(paths)} besides the label files'
        raise NoRastersFoundError(msg)
    report_skipped(s for s in scan.skipped if not is_label(s.path))
    groups = group_rasters(rasters)
    if options.group is not None:
        chosen = [g for g in groups if g.name == options.group]
        if not chosen:
            msg = f'no sensor group {options.group!r}; the images hold {[g.name for g in groups]}'
            raise IncompatibleRasterError(msg)
        groups = chosen
    if len(groups) > 1:
        listed = ', '.join(f'{g.name} ({len(g.rasters)} files)' for g in groups)
        msg = (
            f'the images hold several band layouts: {listed}; a fine-tuned model '
            'takes one, so point --images at the files of one layout'
        )
        raise IncompatibleRasterError(msg)
    return SensorDataset(groups[0], bands=options.bands)


def _resolved(path: str) -> str:
    """Absolute path with links resolved."""
    return str(Path(path).resolve())


def _scene_size(images: SensorDataset, options: _Options) -> int:
    """Chip size: the option, else 256 or the largest that fits the largest image."""
    if options.size is not None:
        return options.size
    xres, yres = images.res
    sides = [
        min((g.bounds[2] - g.bounds[0]) / xres, (g.bounds[3] - g.bounds[1]) / yres)
        for g in images.index.geometry
    ]
    return max(1, min(_SCENE_SIZE, int(max(sides))))


def _scene_splits(
    images: SensorDataset,
    image_roots: Sequence[str],
    size: int,
    options: _Options,
    footprints: Sequence[shapely.Geometry] | None,
) -> dict[SplitName, Any]:
    """Cells (sampling areas) per split of georeferenced scenes."""
    spec = options.split
    files = list(images.index.filepath)
    folders = {f: _root_split(f, image_roots) for f in files}
    if spec == 'auto':
        spec = FolderSplit() if all(folders.values()) else BlockSplit(seed=options.seed)
    match spec:
        case None:
            pieces = scene_pieces(images, None, footprints)
            return {'train': scene_cells(pieces, images.crs)}
        case FolderSplit():
            outside = [f for f, s in folders.items() if s is None]
            if outside:
                msg = (
                    f'{len(outside)} image files are not in a train/val/test folder '
                    f'(e.g. {outside[0]}); arrange them so, or use --split blocks'
                )
                raise LabelError(msg)
            cells = {}
            for name in SPLITS:
                chosen = {f for f, s in folders.items() if s == name}
                if chosen:
                    pieces = scene_pieces(images, None, footprints, chosen)
                    cells[name] = scene_cells(pieces, images.crs)
            return cells
        case BlockSplit():
            block = spec.size or _auto_block_size(images, size, footprints)
            if block < size * max(images.res):
                msg = (
                    f'block size {block:g} is smaller than a {size} px chip '
                    f'({size * max(images.res):g} CRS units); chips must fit in blocks'
                )
                raise ValueError(msg)
            pieces = scene_pieces(images, block, footprints)
            keys = [p[2] for p in pieces if fits_chip(p[3], size, images.res)]
            splits = assign_blocks(
                keys, spec.val_fraction, spec.test_fraction, spec.seed
            )
            logger.info(
                'blocks of %g CRS units: %s',
                block,
                summarise([splits[k] for k in sorted(splits, key=str)]),
            )
            cells = {}
            for name in SPLITS:
                if name in splits.values():
                    cells[name] = scene_cells(
                        pieces, images.crs, _in_split(splits, name)
                    )
            return cells
        case ColumnSplit() | RandomSplit():
            msg = (
                f'--split {"random" if isinstance(spec, RandomSplit) else "column"} '
                'does not fit image scenes: chips drawn from one scene are '
                'neighbours, so split by area (--split blocks) or by folders'
            )
            raise LabelError(msg)


def _in_split(
    splits: dict[Any, SplitName], name: SplitName
) -> Callable[[tuple[int, int] | None], bool]:
    """Whether a block key belongs to split *name*."""

    def keep(key: tuple[int, int] | None) -> bool:
        return splits.get(key) == name

    return keep


def _root_split(path: str, roots: Sequence[str]) -> SplitName | None:
    """Split named by the folders of an image file below the image root it is in."""
    for root in roots:
        split = _relative_split(path, root)
        if split is not None:
            return split
    return None


def _auto_block_size(
    images: SensorDataset, size: int, footprints: Sequence[shapely.Geometry] | None
) -> float:
    """Four chips wide, halved (to two chips at least) until there are 5 blocks."""
    res = max(images.res)
    block = 4 * size * res
    while block > 2 * size * res:
        pieces = scene_pieces(images, block, footprints)
        if len({p[2] for p in pieces if fits_chip(p[3], size, images.res)}) >= 5:
            break
        block /= 2
    return max(block, 2 * size * res)


def _scene_datasets(
    images: SensorDataset,
    labels: RasterLabels | VectorLabels,
    table: ClassTable,
    cells: dict[SplitName, Any],
    size: int,
    background: int | None,
    options: _Options,
    reader: str,
) -> LabelledData:
    """Random training and grid validation / test scene datasets."""
    task: Literal['segment', 'detect'] = (
        'detect' if options.task == 'detect' else 'segment'
    )
    datasets: dict[SplitName, SceneDataset | None] = dict.fromkeys(SPLITS)
    for name, split_cells in cells.items():
        datasets[name] = SceneDataset(
            images,
            labels,
            table,
            task,
            size,
            cells=split_cells,
            sampling='random' if name == 'train' else 'grid',
            length=options.length if name == 'train' else None,
            stride=options.stride,
            min_valid_fraction=options.min_valid_fraction,
            positive_fraction=options.positive_fraction if name == 'train' else 0.0,
            background=background,
            seed=options.seed,
        )
    train = datasets['train']
    if train is None:
        msg = 'the split leaves no area for training'
        raise LabelError(msg)
    return LabelledData(
        task=options.task,
        class_table=table,
        bands=tuple(images.bands),
        train=train,
        val=datasets['val'],
        test=datasets['test'],
        reader=reader,
        images=images,
    )


def _open_vector_scenes(
    image_paths: Sequence[str], label_paths: Sequence[str], options: _Options
) -> LabelledData:
    """Rasters with polygons (segmentation) or boxes (detection)."""
    images = _open_images(image_paths, options, exclude=label_paths)
    source = ', '.join(label_paths)
    frames = []
    for path in label_paths:
        frame = read_table(path, options.layer, options.labels_crs)
        if not isinstance(frame, gpd.GeoDataFrame):
            msg = f'{path} has no geometry (points, polygons or boxes)'
            raise LabelError(msg)
        if options.class_column is not None:
            column = resolve_column(frame, options.class_column, path)
            class_column_values(frame, column, path)
            frame = frame.rename(columns={column: options.class_column})
        frames.append(
            reproject_labels(frame, images.crs, list(images.index.geometry), path)
        )
    frame = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=images.crs)
    kinds = set(frame.geom_type)
    if options.task == 'detect' and kinds & {'Point', 'MultiPoint'}:
        msg = f'{source} holds points, which have no box; detection needs polygons or boxes'
        raise LabelError(msg)
    table = options.class_table
    values = (
        frame[options.class_column].tolist()
        if options.class_column is not None
        else [_foreground_name(table, options)] * len(frame)
    )
    background: int | None = None
    if table is None:
        derived = ClassTable.from_labels(values, options.ignore_index)
        if options.task == 'segment' and options.background is not None:
            if options.background in derived.names:
                msg = (
                    f'class {options.background!r} is both a label class and the '
                    'name of the pixels no polygon covers; rename that class (or '
                    'pass --class-name)'
                )
                raise LabelError(msg)
            # Integer classes keep their codes (the background takes the smallest
            # free one); named classes are numbered 1..K after the background's 0.
            named = any(
                name != str(value)
                for name, value in zip(derived.names, derived.values, strict=True)
            )
            codes = (
                tuple(range(1, len(derived.values) + 1)) if named else derived.values
            )
            free = min(set(range(len(codes) + 1)) - set(codes))
            table = ClassTable(
                names=(options.background, *derived.names),
                values=(free, *codes),
                ignore_index=options.ignore_index,
            )
        else:
            table = derived
    if options.task == 'segment' and options.background in table.names:
        background = table.index(options.background)
    classes = [table.index_of_label(v, source) for v in values]
    labels = VectorLabels(frame.geometry.to_numpy(), classes, images.crs)
    size = _scene_size(images, options)
    cells = _scene_splits(images, image_paths, size, options, None)
    return _scene_datasets(
        images, labels, table, cells, size, background, options, 'vector-labels'
    )


def _foreground_name(table: ClassTable | None, options: _Options) -> str:
    """The class of vector labels without a class column.

    It is *class_name* (the label file's stem by default, see :func:`open_labelled`)
    or ``'object'``; with a class table (a model's) that lacks that name but has
    one class besides the background, that class.
    """
    name = options.class_name or 'object'
    if table is not None and name not in table.names:
        others = [n for n in table.names if n != options.background]
        if len(others) == 1:
            return others[0]
    return name


def _open_mask_labels(
    image_paths: Sequence[str], label_paths: Sequence[str], options: _Options
) -> LabelledData:
    """Label rasters over rasters, or mask chips beside image chips."""
    try:
        label_scan = scan_rasters(label_paths, check_valid=False, report=False)
    except NoRastersFoundError as error:
        # Not georeferenced: mask chips paired with image chips by name.
        try:
            return _open_mask_chips(image_paths, label_paths, options)
        except LabelError:
            if not _georeferenced(image_paths):
                raise
            msg = (
                f'the labels ({", ".join(label_paths)}) cannot be matched to the '
                f'images: they are not georeferenced ({error}) and no image chip '
                'pairs with them by file name'
            )
            raise LabelError(msg) from None
    if label_scan.skipped:
        first = label_scan.skipped[0]
        msg = (
            f'label raster {first.path} cannot be matched to the images: {first.reason}'
        )
        raise LabelError(msg)
    try:
        images = _open_images(image_paths, options, exclude=label_paths)
    except NoRastersFoundError:
        return _open_mask_chips(image_paths, label_paths, options)
    rasters = label_scan.rasters
    colour = _colour_coded(options, rasters[0].count)
    table = _mask_table(rasters, colour, options)
    labels = RasterLabels(rasters, images.crs, images.res, table, colour)
    footprints = list(labels.index.geometry)
    image_area = shapely.union_all(
        np.asarray(list(images.index.geometry), dtype=object)
    )
    if not any(
        f.intersects(image_area) and f.intersection(image_area).area > 0
        for f in footprints
    ):
        bounds = shapely.bounds(shapely.union_all(np.asarray(footprints, dtype=object)))
        msg = (
            f'the label rasters ({", ".join(label_paths)}) lie outside every image: '
            f'labels span {tuple(np.round(bounds, 3).tolist())}, images span '
            f'{tuple(np.round(shapely.bounds(image_area), 3).tolist())} in '
            f"{images.crs.to_string()}; check the label rasters' CRS"
        )
        raise LabelError(msg)
    size = _scene_size(images, options)
    cells = _scene_splits(images, image_paths, size, options, footprints)
    background = (
        table.index(options.background)
        if options.background is not None and options.background in table.names
        else None
    )
    return _scene_datasets(
        images, labels, table, cells, size, background, options, 'label-rasters'
    )


def _georeferenced(paths: Sequence[str]) -> bool:
    """Whether *paths* hold a georeferenced raster."""
    try:
        scan_rasters(paths, check_valid=False, report=False)
    except NoRastersFoundError:
        return False
    return True


def _colour_coded(options: _Options, count: int) -> bool:
    """Whether masks are colours: as asked, else when they have 3 bands or more."""
    return options.colour_coded if options.colour_coded is not None else count >= 3


def _mask_table(
    rasters: Sequence[RasterFile], colour: bool, options: _Options
) -> ClassTable:
    """The class table of label rasters: checked against their values, or derived."""
    table = options.class_table
    if colour and table is None:
        raise LabelError(_COLOUR_TABLE_NEEDED)
    values = scan_label_values([r.path for r in rasters], colour)
    if colour:
        assert table is not None, 'checked above'
        table.encode_colours(_codes_to_rgb(values), source='the label rasters')
        return table
    if table is not None:
        table.encode_values(
            np.asarray(values, dtype=np.int64), source='the label rasters'
        )
        return table
    return mask_table(
        values, rasters[0].path, options.ignore_index, options.ignore_values
    )


#: The error for colour masks without a class table.
_COLOUR_TABLE_NEEDED = (
    'colour-coded masks need a class/colour table: pass --class-table, a JSON or '
    'CSV of class names and colours'
)


def _codes_to_rgb(codes: Sequence[int]) -> npt.NDArray[np.int64]:
    """Colour codes as a (3, 1, N) RGB array."""
    array = np.asarray(codes, dtype=np.int64).reshape(1, -1)
    return np.stack([(array >> 16) & 255, (array >> 8) & 255, array & 255])


def _open_mask_chips(
    image_paths: Sequence[str], label_paths: Sequence[str], options: _Options
) -> LabelledData:
    """Image chips and mask chips paired by name."""
    images = [item for root in image_paths for item in list_files(root)]
    masks = [item for root in label_paths for item in list_files(root)]
    if not images:
        msg = f'no image chip in {", ".join(image_paths)}'
        raise NoRastersFoundError(msg)
    pairs = pair_masks(images, masks)
    first_mask = chip_info(pairs[0][1])
    colour = _colour_coded(options, first_mask.count + first_mask.alpha)
    table = options.class_table
    if table is None:
        if colour:
            raise LabelError(_COLOUR_TABLE_NEEDED)
        values = scan_label_values([mask for _, mask, _ in pairs])
        table = mask_table(
            values, pairs[0][1], options.ignore_index, options.ignore_values
        )
    elif not colour and matches_by_colour(table, mask_palette(pairs[0][1])):
        logger.info(
            "the class table's colours are colours of the masks' palette: "
            'mask pixels are matched to classes by colour'
        )
        colour = True
    splits = _assign_splits(
        options.split,
        len(pairs),
        folders=[p[2] for p in pairs],
        seed=options.seed,
        what='mask chips',
    )
    _log_splits('mask chips', splits)
    datasets = _per_split(
        splits,
        lambda chosen: ChipSegmentationDataset(
            [pairs[k][0] for k in chosen],
            [pairs[k][1] for k in chosen],
            table,
            colour_coded=colour,
            size=options.size,
        ),
    )
    _log_chip_windows('mask chips', datasets)
    return _chip_data('segment', table, datasets, 'mask-chips')


def _log_chip_windows(
    what: str, datasets: dict[SplitName, Dataset[dict[str, Tensor]] | None]
) -> None:
    """Say once how chips of another size than the window become samples."""
    chips = [
        d
        for d in datasets.values()
        if isinstance(d, ChipSegmentationDataset | ChipDetectionDataset)
    ]
    if not chips or chips[0].size is None:
        return
    height, width = chips[0].size
    shapes = [shape for d in chips for shape in d.shapes]
    larger = sum(h > height or w > width for h, w in shapes)
    smaller = sum(h < height or w < width for h, w in shapes)
    if not larger and not smaller:
        return
    windows = sum(len(d) for d in chips)
    sizes = sorted(set(shapes))
    shown = ', '.join(f'{h} x {w}' for h, w in sizes[:3]) + (
        ', ...' if len(sizes) > 3 else ''
    )
    logger.warning(
        '%s of %s px are cut into %d windows of %d x %d px (--image-size), never '
        'resampled: %d chips are larger than a window, %d smaller in a side and '
        'padded (padding is ignored by the loss and the metrics)',
        what,
        shown,
        windows,
        height,
        width,
        larger,
        smaller,
    )


# -- detection chips -------------------------------------------------------------------------


def _open_coco(
    image_paths: Sequence[str], label_paths: Sequence[str], options: _Options
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
    return _detection_chips(records, lambda v: lookup[int(v)], table, options, 'coco')


def _open_voc(
    image_paths: Sequence[str], label_paths: Sequence[str], options: _Options
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
    return _detection_chips(
        records, lambda v: table.index_of_label(v, 'VOC'), table, options, 'voc'
    )


def _open_dataset_boxes(
    kind: str, image_paths: Sequence[str], label_paths: Sequence[str], options: _Options
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
    return _detection_chips(
        records, lambda v: table.index_of_label(v, kind), table, options, kind
    )


def _detection_chips(
    records: Sequence[BoxRecord],
    index_of: Any,
    table: ClassTable,
    options: _Options,
    reader: str,
) -> LabelledData:
    """Detection chip datasets per split."""
    splits = _assign_splits(
        options.split,
        len(records),
        folders=[r.split for r in records],
        seed=options.seed,
        what=f'{reader} images',
    )
    _log_splits(reader, splits)
    datasets = _per_split(
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
    )
    _log_chip_windows(f'{reader} image chips', datasets)
    return _chip_data('detect', table, datasets, reader)


# -- batching and statistics --------------------------------------------------------------

#: Keys whose per-sample tensors differ in length and are batched as lists.
_LIST_KEYS = frozenset({'boxes', 'labels', 'ignore_boxes', 'ignore_labels'})


def collate_labelled(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch labelled samples: stack same-shape tensors, list boxes and box labels.

    Args:
        samples: samples of one of this package's datasets.

    Returns:
        ``image`` (B, C, H, W), ``valid`` (B, H, W), ``label`` (B,) or ``mask``
        (B, H, W), or lists ``boxes`` and ``labels`` of B tensors.

    Raises:
        IncompatibleRasterError: If images of the batch differ in size.
    """
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        if key in _LIST_KEYS or not isinstance(values[0], Tensor):
            batch[key] = values
            continue
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            msg = (
                f'{key} tensors of one batch differ in shape {sorted(shapes)}; chips '
                'must share a size: give --image-size'
            )
            raise IncompatibleRasterError(msg)
        batch[key] = torch.stack(values)
    return batch


def labelled_statistics(
    data: LabelledData | Dataset[dict[str, Tensor]],
    num_samples: int = 64,
    max_pixels: int = 1_000_000,
    seed: int = 0,
) -> BandStatistics:
    """Per-band statistics of the images, for normalisation.

    Georeferenced images use :func:`~dspt_geo.data.statistics.compute_statistics`
    over the whole sensor group; chip datasets estimate the same statistics from a
    seeded sample of training chips (valid pixels only).

    Args:
        data: opened labelled data, or one of its datasets.
        num_samples: chips (or patches) to draw.
        max_pixels: valid pixels per band kept at most.
        seed: seed of the draw.

    Returns:
        the statistics.

    Raises:
        EmptyRasterError: If the drawn chips hold no valid pixel.
    """
    images = getattr(data, 'images', None)
    if isinstance(images, SensorDataset):
        return compute_statistics(
            images, num_patches=num_samples, max_pixels=max_pixels, seed=seed
        )
    dataset = data.train if isinstance(data, LabelledData) else data
    count = len(dataset)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(count, generator=generator)[:num_samples].tolist()
    per_chip = max(1, max_pixels // max(1, len(order)))
    chunks = []
    bands: tuple[str, ...] = tuple(getattr(dataset, 'bands', ()))
    for index in order:
        sample = dataset[index]
        pixels = sample['image'][:, sample['valid']]
        pixels = pixels[:, torch.isfinite(pixels).all(dim=0)]
        if pixels.shape[1] > per_chip:
            keep = torch.randperm(pixels.shape[1], generator=generator)[:per_chip]
            pixels = pixels[:, keep]
        chunks.append(pixels.double())
    values = torch.cat(chunks, dim=1).numpy() if chunks else np.empty((len(bands), 0))
    if values.shape[1] == 0:
        msg = f'the {len(order)} chips drawn hold no valid pixel'
        raise EmptyRasterError(msg)
    p02, p50, p98 = np.percentile(values, [2, 50, 98], axis=1)
    return BandStatistics(
        bands=bands or tuple(f'band_{i + 1}' for i in range(values.shape[0])),
        mean=tuple(values.mean(axis=1).tolist()),
        std=tuple(values.std(axis=1).tolist()),
        p02=tuple(p02.tolist()),
        p50=tuple(p50.tolist()),
        p98=tuple(p98.tolist()),
        pixels=int(values.shape[1]),
    )
