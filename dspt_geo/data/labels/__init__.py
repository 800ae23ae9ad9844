"""Labelled data for fine-tuning: classification, segmentation and detection.

Start at :func:`open_labelled`, which reads labels in the forms users have them
(class folders, chip tables, points, label rasters, polygons, colour masks, COCO,
Pascal VOC, NWPU VHR-10, HRSC2016, DOTA), derives the :class:`ClassTable` once, splits train / validation / test
(folders, a column, or spatial blocks) and returns torch datasets:

* classification: ``{'image': float32 (C, H, W), 'label': int64 (), 'valid'}``
* segmentation: ``{'image', 'mask': int64 (H, W), 'valid'}``, ``ignore_index`` where
  there is no label
* detection: ``{'image', 'boxes': float32 (N, 4) x0 y0 x1 y1 pixels, 'labels': int64
  (N,), 'valid'}``

``image`` holds stored values (normalise with :func:`labelled_statistics` and
:func:`dspt_geo.data.transforms.normalise`); ``valid`` is the bool (H, W) mask of
pixels with image data. Chip datasets are map-style; scene datasets (rasters with
label rasters or vectors) are iterable and shard themselves across DDP ranks and
workers. Batch with :func:`collate_labelled`; :func:`write_split_lists` says what
each split holds. :class:`SceneWindows` tiles a split's
scenes with overlapping windows that score every labelled pixel once (evaluation).
"""

from ...errors import LabelError
from .api import open_labelled
from .chips import (
    ChipClassificationDataset,
    ChipDetectionDataset,
    ChipSegmentationDataset,
    list_files,
    read_chip,
)
from .classes import DEFAULT_IGNORE_INDEX, ClassTable, default_palette
from .collate import SampleBatch, collate_labelled
from .data import TASKS, LabelledData, Task
from .dota import read_dota
from .formats import read_class_folders, read_coco, read_voc
from .hrsc import read_hrsc
from .lists import split_items, write_split_lists
from .nwpu import NWPU_CLASSES, read_nwpu
from .rasters import RasterLabels
from .scenes import LocationClassificationDataset, SceneDataset
from .split import (
    BlockSplit,
    ColumnSplit,
    FolderSplit,
    RandomSplit,
    SplitSpec,
    assign_blocks,
    block_keys,
    stratified_fraction,
)
from .statistics import labelled_statistics
from .vectors import VectorLabels, read_table
from .windows import SceneWindows, axis_windows

__all__ = (
    'DEFAULT_IGNORE_INDEX',
    'NWPU_CLASSES',
    'TASKS',
    'BlockSplit',
    'ChipClassificationDataset',
    'ChipDetectionDataset',
    'ChipSegmentationDataset',
    'ClassTable',
    'ColumnSplit',
    'FolderSplit',
    'LabelError',
    'LabelledData',
    'LocationClassificationDataset',
    'RandomSplit',
    'RasterLabels',
    'SampleBatch',
    'SceneDataset',
    'SceneWindows',
    'SplitSpec',
    'Task',
    'VectorLabels',
    'assign_blocks',
    'axis_windows',
    'block_keys',
    'collate_labelled',
    'default_palette',
    'labelled_statistics',
    'list_files',
    'open_labelled',
    'read_chip',
    'read_class_folders',
    'read_coco',
    'read_dota',
    'read_hrsc',
    'read_nwpu',
    'read_table',
    'read_voc',
    'split_items',
    'stratified_fraction',
    'write_split_lists',
)
