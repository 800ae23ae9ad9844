"""Label rasters over rasters: any CRS and resolution, values or colours.

A form of segmentation labels: the labels hold a georeferenced raster and so do the
images (see :func:`matches`); otherwise rasters as labels are mask chips
(:mod:`.mask_chips`).
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import shapely

from ....errors import LabelError
from ...discovery import RasterFile, scan_rasters
from ..classes import ClassTable
from ..data import LabelledData
from ..rasters import RasterLabels, scan_label_values
from ..sidecars import mask_table
from .common import COLOUR_TABLE_NEEDED, OpenOptions, colour_coded
from .scenes import (
    georeferenced,
    open_images,
    scene_cells_per_split,
    scene_datasets,
    scene_size,
)

__all__ = ('matches', 'open_label_rasters')


def matches(image_paths: Sequence[str], label_paths: Sequence[str]) -> bool:
    """Whether the labels are label rasters rather than mask chips.

    They are when they hold a georeferenced raster and so do the images (besides
    the label files); headers only.
    """
    return georeferenced(label_paths) and georeferenced(
        image_paths, exclude=label_paths
    )


def open_label_rasters(
    image_paths: Sequence[str], label_paths: Sequence[str], options: OpenOptions
) -> LabelledData:
    """Label rasters over rasters.

    Raises:
        LabelError: If a label file is not georeferenced, the labels lie outside
            every image, or their values do not fit the class table.
    """
    label_scan = scan_rasters(label_paths, check_valid=False, report=False)
    if label_scan.skipped:
        first = label_scan.skipped[0]
        msg = (
            f'label raster {first.path} cannot be matched to the images: {first.reason}'
        )
        raise LabelError(msg)
    images = open_images(image_paths, options, exclude=label_paths)
    rasters = label_scan.rasters
    colour = colour_coded(options, rasters[0].count)
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
    size = scene_size(images, options)
    cells = scene_cells_per_split(images, image_paths, size, options, footprints)
    background = (
        table.index(options.background)
        if options.background is not None and options.background in table.names
        else None
    )
    return scene_datasets(
        images, labels, table, cells, size, background, options, 'label-rasters'
    )


def _mask_table(
    rasters: Sequence[RasterFile], colour: bool, options: OpenOptions
) -> ClassTable:
    """The class table of label rasters: checked against their values, or derived."""
    table = options.class_table
    if colour and table is None:
        raise LabelError(COLOUR_TABLE_NEEDED)
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


def _codes_to_rgb(codes: Sequence[int]) -> npt.NDArray[np.int64]:
    """Colour codes as a (3, 1, N) RGB array."""
    array = np.asarray(codes, dtype=np.int64).reshape(1, -1)
    return np.stack([(array >> 16) & 255, (array >> 8) & 255, array & 255])
