"""Vector labels over rasters: polygons (segmentation), polygons or boxes (detection)."""

from collections.abc import Sequence

import geopandas as gpd
import pandas as pd

from ....errors import LabelError
from ..classes import ClassTable
from ..data import LabelledData
from ..vectors import (
    VectorLabels,
    class_column_values,
    read_table,
    reproject_labels,
    resolve_column,
)
from .common import OpenOptions
from .scenes import open_images, scene_cells_per_split, scene_datasets, scene_size

__all__ = ('open_vector_scenes',)


def open_vector_scenes(
    image_paths: Sequence[str], label_paths: Sequence[str], options: OpenOptions
) -> LabelledData:
    """Rasters with polygons (segmentation) or boxes (detection)."""
    images = open_images(image_paths, options, exclude=label_paths)
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
    size = scene_size(images, options)
    cells = scene_cells_per_split(images, image_paths, size, options, None)
    return scene_datasets(
        images, labels, table, cells, size, background, options, 'vector-labels'
    )


def _foreground_name(table: ClassTable | None, options: OpenOptions) -> str:
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
