"""Classification chips centred on labelled points or polygons over rasters."""

import logging
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import shapely

from ....errors import LabelError
from ...dataset import SensorDataset
from ..classes import ClassTable
from ..data import LabelledData
from ..scenes import LocationClassificationDataset
from ..split import assign_splits
from ..vectors import (
    CLASS_COLUMNS,
    class_column_values,
    find_column,
    reproject_labels,
    resolve_column,
)
from .common import OpenOptions, check_classes, label_fraction, log_splits, per_split
from .scenes import open_images

__all__ = ('open_locations',)

logger = logging.getLogger(__name__)

_LOCATION_SIZE = 64


def open_locations(
    image_paths: Sequence[str],
    frame: gpd.GeoDataFrame,
    source: str,
    options: OpenOptions,
) -> LabelledData:
    """Chips centred on labelled points or polygons over rasters."""
    images = open_images(image_paths, options, exclude=())
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
    splits = assign_splits(
        options.split,
        len(labels),
        frame=frame,
        locations=locations,
        block_size=4 * size * max(images.res),
        seed=options.seed,
        what=f'locations of {source}',
        classes=labels,
    )
    check_classes(table, labels, splits)
    log_splits(source, splits)
    datasets = per_split(
        splits,
        lambda chosen: LocationClassificationDataset(
            images, points[chosen], [labels[k] for k in chosen], table, size
        ),
        label_fraction(options, 'locations', labels, table),
    )
    train = datasets['train']
    assert train is not None, 'checked by per_split'
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
