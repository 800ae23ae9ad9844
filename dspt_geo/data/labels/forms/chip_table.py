"""A table (CSV, GeoPackage, ...) of chip paths and classes, or of locations.

A table with geometries is locations over rasters (:mod:`.locations`); a plain
table names chip paths (a path column) and their classes.
"""

import os
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd

from ..chips import zip_location
from ..classes import ClassTable
from ..data import LabelledData
from ..formats import read_chip_table
from ..split import assign_splits, relative_split
from ..vectors import read_table
from .class_folders import (
    chip_block_size,
    chip_classification,
    chip_locations,
    needs_locations,
)
from .common import OpenOptions, check_classes, log_splits
from .locations import open_locations

__all__ = ('open_chip_table',)


def open_chip_table(
    image_paths: Sequence[str], table_path: str, options: OpenOptions
) -> LabelledData:
    """A table of chip paths, or of locations over rasters."""
    frame = read_table(table_path, options.layer, options.labels_crs)
    if isinstance(frame, gpd.GeoDataFrame):
        return open_locations(image_paths, frame, table_path, options)
    root = image_paths[0] if image_paths else str(Path(table_path).parent)
    if not os.path.isdir(root) and zip_location(root) is None:
        root = str(Path(table_path).parent)
    paths, values = read_chip_table(
        frame, table_path, root, options.class_column, options.path_column
    )
    table = options.class_table or ClassTable.from_labels(values, options.ignore_index)
    labels = [table.index_of_label(v, table_path) for v in values]
    folders = [relative_split(p, root) for p in paths]
    needed = needs_locations(options, folders, frame)
    locations = chip_locations(paths) if needed else None
    splits = assign_splits(
        options.split,
        len(paths),
        folders=folders,
        frame=frame,
        locations=locations,
        block_size=chip_block_size(paths, options) if locations else None,
        seed=options.seed,
        what=f'chips of {table_path}',
        classes=labels,
    )
    check_classes(table, labels, splits)
    log_splits(table_path, splits)
    return chip_classification(paths, labels, splits, table, options, 'chip-table')
