"""Shared fixtures: small georeferenced rasters written by the tests themselves."""

import json
import subprocess
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


DEBIAN_PYTHON = Path('/usr/bin/python3')
QGIS_PACKAGE = Path('/usr/lib/python3/dist-packages/qgis')
QGIS_CHECK = Path(__file__).with_name('predict') / 'qgis_check.py'


@pytest.fixture
def qgis_check(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Open outputs in real QGIS (Debian's python3-qgis) and report what it saw.

    The check runs in Debian's python3, so that QGIS's libraries never meet the
    virtual environment's; the test skips where QGIS is not installed.
    """
    if not (DEBIAN_PYTHON.is_file() and QGIS_PACKAGE.is_dir()):
        pytest.skip('QGIS (Debian python3-qgis) is not installed')

    def check(mask: Path, detections: Path, project: Path) -> dict[str, Any]:
        args = {
            'mask': str(mask),
            'detections': str(detections),
            'project': str(project),
            'png': str(tmp_path / 'map.png'),
            'project_png': str(tmp_path / 'project.png'),
        }
        home = tmp_path / 'qgis-home'
        home.mkdir(mode=0o700, exist_ok=True)
        env = {
            'PATH': '/usr/bin:/bin',
            'HOME': str(home),
            'QT_QPA_PLATFORM': 'offscreen',
            'XDG_RUNTIME_DIR': str(home),
            'LANG': 'C.UTF-8',
        }
        done = subprocess.run(
            [str(DEBIAN_PYTHON), str(QGIS_CHECK), json.dumps(args)],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert Path(args['png']).stat().st_size > 0
        return json.loads(done.stdout.strip().splitlines()[-1])

    return check
