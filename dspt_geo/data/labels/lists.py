"""What each split holds, as text lists: ``RUN_DIR/splits/train.txt`` and the like.

One line per item, tab-separated, so a run says which labels it trained and
validated on (a label fraction's draw included) and another run can be compared:

* classification chips: chip path, class name;
* locations: ``x y`` (the images' CRS), class name;
* mask chips: image path, mask path;
* detection chips: image path, number of boxes;
* scenes: image file, ``left bottom right top`` of the cell chips are drawn from.
"""

import os
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from ...outputs import atomic_write
from .chips import (
    ChipClassificationDataset,
    ChipDetectionDataset,
    ChipSegmentationDataset,
)
from .data import LabelledData
from .scenes import LocationClassificationDataset, SceneDataset
from .split import SPLITS, SplitName

__all__ = ('split_items', 'write_split_lists')


def split_items(dataset: Dataset[dict[str, Tensor]]) -> list[str]:
    """One line per item of a dataset of :func:`open_labelled` (see the module).

    Raises:
        TypeError: If *dataset* is of another kind.
    """
    match dataset:
        case ChipClassificationDataset():
            names = dataset.class_table.names
            return [
                f'{path}\t{names[label]}'
                for path, label in zip(dataset.paths, dataset.labels, strict=True)
            ]
        case ChipSegmentationDataset():
            return [
                f'{path}\t{mask}'
                for path, mask in zip(dataset.paths, dataset.mask_paths, strict=True)
            ]
        case ChipDetectionDataset():
            return [
                f'{path}\t{len(boxes)}'
                for path, boxes in zip(dataset.paths, dataset.boxes, strict=True)
            ]
        case LocationClassificationDataset():
            names = dataset.class_table.names
            return [
                f'{x!r} {y!r}\t{names[label]}'
                for (x, y), label in zip(
                    dataset.points.tolist(), dataset.labels, strict=True
                )
            ]
        case SceneDataset():
            return [
                f'{path}\t{" ".join(repr(v) for v in geometry.bounds)}'
                for path, geometry in zip(
                    dataset.cells.filepath, dataset.cells.geometry, strict=True
                )
            ]
    msg = f'cannot list the items of a {type(dataset).__name__}'
    raise TypeError(msg)


def write_split_lists(
    data: LabelledData, folder: str | os.PathLike[str]
) -> dict[SplitName, Path]:
    """Write ``train.txt``, ``val.txt`` and ``test.txt`` (those splits that exist).

    Each file is written to a temporary name and renamed, so a list is whole or
    absent.

    Args:
        data: the opened data.
        folder: where to write (created).

    Returns:
        the written files by split.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[SplitName, Path] = {}
    for name in SPLITS:
        dataset = data.split(name)
        path = folder / f'{name}.txt'
        if dataset is None:
            path.unlink(missing_ok=True)
            continue
        with atomic_write(path) as tmp:
            tmp.write_text(''.join(f'{line}\n' for line in split_items(dataset)))
        written[name] = path
    return written
