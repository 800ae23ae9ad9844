"""Georeferenced scenes, shared by the forms over rasters.

The images' sensor dataset, the chip size, the sampling cells of each split and the
random training / grid validation datasets of label rasters, vector labels and
(the images of) locations.
"""

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import shapely

from .... import SUMMARY_LOGGER
from ....errors import IncompatibleRasterError, LabelError, NoRastersFoundError
from ...dataset import SensorDataset
from ...discovery import report_skipped, scan_rasters
from ...groups import group_rasters
from ..classes import ClassTable
from ..data import LabelledData
from ..rasters import RasterLabels
from ..scenes import SceneDataset, fits_chip, scene_cells, scene_pieces
from ..split import (
    SPLITS,
    BlockSplit,
    FolderSplit,
    SplitName,
    assign_blocks,
    relative_split,
    scene_split,
    summarise,
    training_fraction,
)
from ..vectors import VectorLabels
from .common import OpenOptions

__all__ = (
    'georeferenced',
    'open_images',
    'scene_cells_per_split',
    'scene_datasets',
    'scene_size',
)

logger = logging.getLogger(__name__)
#: Run settings shown at the default verbosity (the label fraction's draw).
summary = logging.getLogger(SUMMARY_LOGGER)

#: Default chip size (pixels) of scene chips and of location chips.
_SCENE_SIZE = 256


def open_images(
    paths: Sequence[str], options: OpenOptions, exclude: Sequence[str]
) -> SensorDataset:
    """The images' sensor dataset (one band layout), label files left out.

    Files skipped are reported only when the images are used: image chips without
    a CRS are not skipped but read as chips by the caller.
    """
    scan = scan_rasters(paths, report=False)
    excluded = [_resolved(p) for p in exclude]

    def is_label(path: str) -> bool:
        return any(_under(path, ex) for ex in excluded)

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


def georeferenced(paths: Sequence[str], exclude: Sequence[str] = ()) -> bool:
    """Whether *paths* hold a georeferenced raster (files under *exclude* left out).

    The format check between label rasters and mask chips: headers only, and
    image chips are found, not skipped, so nothing but missing paths raises.

    Raises:
        NoRastersFoundError: If a path does not exist.
    """
    scan = scan_rasters(paths, check_valid=False, chips=True, report=False)
    excluded = [_resolved(p) for p in exclude]
    return any(
        not any(_under(path, ex) for path in raster.paths for ex in excluded)
        for raster in scan.rasters
    )


def _under(path: str, folder: str) -> bool:
    """Whether *path* is *folder* or lies in it (*folder* resolved)."""
    path = _resolved(path)
    return path == folder or path.startswith(folder + os.sep)


def scene_size(images: SensorDataset, options: OpenOptions) -> int:
    """Chip size: the option, else 256 or the largest that fits the largest image."""
    if options.size is not None:
        return options.size
    xres, yres = images.res
    sides = [
        min((g.bounds[2] - g.bounds[0]) / xres, (g.bounds[3] - g.bounds[1]) / yres)
        for g in images.index.geometry
    ]
    return max(1, min(_SCENE_SIZE, int(max(sides))))


def scene_cells_per_split(
    images: SensorDataset,
    image_roots: Sequence[str],
    size: int,
    options: OpenOptions,
    footprints: Sequence[shapely.Geometry] | None,
) -> dict[SplitName, Any]:
    """Cells (sampling areas) per split of georeferenced scenes.

    Under a label fraction, the training area is cut into blocks (the split's, else
    four chips wide, see :func:`_auto_block_size`) and a seeded share of them
    trains (at least one).
    """
    folders = {f: _root_split(f, image_roots) for f in images.index.filepath}
    spec = scene_split(options.split, folders, options.seed)
    cells: dict[SplitName, Any] = {}
    match spec:
        case None:
            pieces = scene_pieces(images, None, footprints)
            cells['train'] = scene_cells(pieces, images.crs)
            if options.label_fraction is not None:
                cells['train'] = _training_regions(images, size, footprints, options)
            return cells
        case FolderSplit():
            for name in SPLITS:
                chosen = {f for f, s in folders.items() if s == name}
                if chosen:
                    pieces = scene_pieces(images, None, footprints, chosen)
                    cells[name] = scene_cells(pieces, images.crs)
            if options.label_fraction is not None and 'train' in cells:
                train = {f for f, s in folders.items() if s == 'train'}
                cells['train'] = _training_regions(
                    images, size, footprints, options, files=train
                )
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
            for name in SPLITS:
                if name in splits.values():
                    cells[name] = scene_cells(
                        pieces, images.crs, _in_split(splits, name)
                    )
            if options.label_fraction is not None and 'train' in cells:
                cells['train'] = _training_regions(
                    images, size, footprints, options, block=block, splits=splits
                )
            return cells


def _training_regions(
    images: SensorDataset,
    size: int,
    footprints: Sequence[shapely.Geometry] | None,
    options: OpenOptions,
    *,
    files: set[str] | None = None,
    block: float | None = None,
    splits: dict[Any, SplitName] | None = None,
) -> Any:
    """The training cells a label fraction keeps: a seeded share of blocks.

    Args:
        images: the images.
        size: chip size in pixels.
        footprints: where labels exist.
        options: the options (``label_fraction``, ``label_seed``).
        files: the training image files (a folder split); None: all.
        block: block side (a block split's); None: :func:`_auto_block_size`.
        splits: block key -> split of a block split; None: every block trains.

    Returns:
        the kept training cells.
    """
    assert options.label_fraction is not None, 'called under a label fraction'
    block = block or _auto_block_size(images, size, footprints)
    pieces = scene_pieces(images, block, footprints, files)
    keys: list[tuple[int, int]] = sorted(
        {
            p[2]
            for p in pieces
            if p[2] is not None
            and fits_chip(p[3], size, images.res)
            and (splits is None or splits.get(p[2]) == 'train')
        }
    )
    kept = {
        keys[i]
        for i in training_fraction(
            list(range(len(keys))), options.label_fraction, options.label_seed
        )
    }
    summary.info(
        'label fraction %g (seed %d): training keeps %d of %d regions (blocks of '
        '%g CRS units)',
        options.label_fraction,
        options.label_seed,
        len(kept),
        len(keys),
        block,
    )
    return scene_cells(pieces, images.crs, kept.__contains__)


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
        split = relative_split(path, root)
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


def scene_datasets(
    images: SensorDataset,
    labels: RasterLabels | VectorLabels,
    table: ClassTable,
    cells: dict[SplitName, Any],
    size: int,
    background: int | None,
    options: OpenOptions,
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
