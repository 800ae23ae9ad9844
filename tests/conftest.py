"""Shared fixtures: small georeferenced rasters written by the tests themselves."""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

SHARED_DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'

RasterWriter = Callable[..., Path]


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = 'EPSG:32633',
    origin: tuple[float, float] = (500_000.0, 5_000_000.0),
    res: float = 10.0,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    tiled: bool = False,
    **profile: Any,
) -> Path:
    """Write *data* (bands, rows, cols) as a GeoTIFF; returns *path*."""
    if data.ndim == 2:
        data = data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        'driver': 'GTiff',
        'width': data.shape[2],
        'height': data.shape[1],
        'count': data.shape[0],
        'dtype': data.dtype.name,
        'crs': CRS.from_user_input(crs) if crs else None,
        'transform': from_origin(*origin, res, res) if crs else None,
        'nodata': nodata,
    }
    if tiled:
        options.update(tiled=True, blockxsize=64, blockysize=64)
    options.update(profile)
    with rasterio.open(path, 'w', **options) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = tuple(descriptions)
    return path


@pytest.fixture
def raster_writer(tmp_path: Path) -> RasterWriter:
    """Write a raster relative to the test's temporary folder."""

    def write(relative: str, data: np.ndarray, **kwargs: Any) -> Path:
        return write_raster(tmp_path / relative, data, **kwargs)

    return write


@pytest.fixture
def rng() -> np.random.Generator:
    """Seeded random generator."""
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Keep statistics and the sample out of the user's cache."""
    cache = tmp_path_factory.mktemp('cache')
    monkeypatch.setenv('DSPT_GEO_CACHE', str(cache))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    return cache


@pytest.fixture
def shared_data() -> Path:
    """The real sample data beside the checkout; skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip('real sample data (../shared/data) not present')
    return SHARED_DATA
