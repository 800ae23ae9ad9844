"""Mask chips beside image chips, paired by file name: values, palettes or colours.

A form of segmentation labels: rasters as labels that are not label rasters (see
:func:`.label_rasters.matches`), e.g. PNG masks beside JPEG tiles.
"""

import logging
from collections.abc import Sequence

from ....errors import LabelError, NoRastersFoundError
from ..chips import ChipSegmentationDataset, chip_info, list_files
from ..data import LabelledData
from ..formats import pair_masks
from ..rasters import scan_label_values
from ..sidecars import mask_palette, mask_table, matches_by_colour
from ..split import assign_splits
from .common import (
    COLOUR_TABLE_NEEDED,
    OpenOptions,
    chip_data,
    colour_coded,
    label_fraction,
    log_chip_windows,
    log_splits,
    per_split,
)
from .scenes import georeferenced

__all__ = ('open_mask_chips',)

logger = logging.getLogger(__name__)


def open_mask_chips(
    image_paths: Sequence[str], label_paths: Sequence[str], options: OpenOptions
) -> LabelledData:
    """Image chips and mask chips paired by name.

    Raises:
        NoRastersFoundError: If there is no image chip.
        LabelError: If no image chip pairs with a mask, or mask values do not fit
            the class table.
    """
    images = [item for root in image_paths for item in list_files(root)]
    masks = [item for root in label_paths for item in list_files(root)]
    if not images:
        msg = f'no image chip in {", ".join(image_paths)}'
        raise NoRastersFoundError(msg)
    try:
        pairs = pair_masks(images, masks)
    except LabelError:
        if not georeferenced(image_paths):
            raise
        # Georeferenced images with labels that are not: say so, not just "no pair".
        msg = (
            f'the labels ({", ".join(label_paths)}) cannot be matched to the '
            'images: they are not georeferenced (no CRS) and no image chip pairs '
            'with them by file name'
        )
        raise LabelError(msg) from None
    first_mask = chip_info(pairs[0][1])
    colour = colour_coded(options, first_mask.count + first_mask.alpha)
    table = options.class_table
    if table is None:
        if colour:
            raise LabelError(COLOUR_TABLE_NEEDED)
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
    splits = assign_splits(
        options.split,
        len(pairs),
        folders=[p[2] for p in pairs],
        seed=options.seed,
        what='mask chips',
    )
    log_splits('mask chips', splits)
    datasets = per_split(
        splits,
        lambda chosen: ChipSegmentationDataset(
            [pairs[k][0] for k in chosen],
            [pairs[k][1] for k in chosen],
            table,
            colour_coded=colour,
            size=options.size,
        ),
        label_fraction(options, 'mask chips (images)'),
    )
    log_chip_windows('mask chips', datasets)
    return chip_data('segment', table, datasets, 'mask-chips')
