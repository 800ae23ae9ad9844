"""Helpers for the labelled-data tests: PNG chips and vector label files."""

import warnings
from pathlib import Path
from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.errors import NotGeoreferencedWarning

#: The synthetic scenes' UTM zone and origin (conftest.write_raster's defaults).
UTM = 'EPSG:32633'
ORIGIN = (500_000.0, 5_000_000.0)


def write_png(path: Path, data: np.ndarray) -> Path:
    """Write (bands, rows, cols) uint8 *data* as a plain PNG (no georeference)."""
    if data.ndim == 2:
        data = data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NotGeoreferencedWarning)
        with rasterio.open(
            path,
            'w',
            driver='PNG',
            width=data.shape[2],
            height=data.shape[1],
            count=data.shape[0],
            dtype='uint8',
        ) as dst:
            dst.write(data)
    return path


def pixel_box(col0: int, row0: int, col1: int, row1: int, res: float = 10.0):
    """UTM box covering pixel columns col0..col1-1 and rows row0..row1-1."""
    x0, y0 = ORIGIN
    return shapely.box(
        x0 + col0 * res, y0 - row1 * res, x0 + col1 * res, y0 - row0 * res
    )


def to_crs(geometry, crs: str, source: str = UTM):
    """*geometry* transformed from *source* to *crs*."""
    transformer = Transformer.from_crs(source, crs, always_xy=True)
    return shapely.transform(
        geometry, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
    )


@pytest.fixture
def geo() -> SimpleNamespace:
    """The synthetic scenes' CRS and origin, and geometry helpers."""
    return SimpleNamespace(
        UTM=UTM, ORIGIN=ORIGIN, pixel_box=pixel_box, to_crs=to_crs, write_png=write_png
    )


@pytest.fixture
def vector_writer(tmp_path: Path):
    """Write geometries with attributes as a vector file under the test folder."""

    def write(relative: str, geometries, crs: str | None = UTM, **columns) -> Path:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = gpd.GeoDataFrame(columns, geometry=list(geometries), crs=crs)
        frame.to_file(path)
        return path

    return write


@pytest.fixture
def png_writer(tmp_path: Path):
    """Write a PNG chip under the test folder."""

    def write(relative: str, data: np.ndarray) -> Path:
        return write_png(tmp_path / relative, data)

    return write
