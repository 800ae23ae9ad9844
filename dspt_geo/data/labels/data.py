"""What :func:`~dspt_geo.data.labels.open_labelled` returns: the datasets of a task."""

import os
from dataclasses import dataclass
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from ...task import TASKS, Task
from ..dataset import SensorDataset
from ..statistics import BandStatistics
from .classes import ClassTable
from .split import SplitName
from .statistics import labelled_statistics

__all__ = ('TASKS', 'LabelledData', 'PathLike', 'Task')

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
