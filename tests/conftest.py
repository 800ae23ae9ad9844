"""Shared fixtures: small georeferenced rasters written by the tests themselves."""

import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import rasterio
from PIL import Image
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


# -- masks with palettes and sidecars (QGIS/GDAL class names) ------------------------

#: Palette of the palette masks: index -> colour (the rest of the 256 is black).
PALETTE = {0: (0, 0, 0), 1: (230, 25, 75), 2: (60, 180, 75), 3: (0, 130, 200)}


def palette_png(path: Path, values: np.ndarray) -> Path:
    """Write *values* as a mode "P" PNG with :data:`PALETTE`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values.astype(np.uint8), mode='P')
    flat = [c for i in range(256) for c in PALETTE.get(i, (0, 0, 0))]
    image.putpalette(flat)
    image.save(path)
    return path


def aux_xml_rat(path: Path, rows: list[tuple[int, str, tuple[int, int, int]]]) -> Path:
    """A GDAL .aux.xml beside *path* with a raster attribute table of *rows*."""
    fields = [('Value', 0, 5), ('Class_Name', 2, 2), ('Red', 0, 6), ('Green', 0, 7)]
    fields.append(('Blue', 0, 8))
    defs = ''.join(
        f'<FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage>'
        '</FieldDefn>'
        for i, (n, t, u) in enumerate(fields)
    )
    body = ''.join(
        f'<Row index="{i}"><F>{v}</F><F>{name}</F><F>{r}</F><F>{g}</F><F>{b}</F></Row>'
        for i, (v, name, (r, g, b)) in enumerate(rows)
    )
    sidecar = Path(f'{path}.aux.xml')
    sidecar.write_text(
        '<PAMDataset><PAMRasterBand band="1"><GDALRasterAttributeTable '
        f'tableType="thematic">{defs}{body}</GDALRasterAttributeTable>'
        '</PAMRasterBand></PAMDataset>'
    )
    return sidecar


def aux_xml_categories(path: Path, names: list[str]) -> Path:
    """A GDAL .aux.xml beside *path* with category names (value = position)."""
    items = ''.join(f'<Category>{name}</Category>' for name in names)
    sidecar = Path(f'{path}.aux.xml')
    sidecar.write_text(
        '<PAMDataset><PAMRasterBand band="1"><CategoryNames>'
        f'{items}</CategoryNames></PAMRasterBand></PAMDataset>'
    )
    return sidecar


def qml(path: Path, entries: list[tuple[int, str, str]], paletted: bool = True) -> Path:
    """A QGIS style beside *path*: paletted, or an exact pseudocolour ramp."""
    sidecar = path.with_suffix('.qml')
    if paletted:
        items = ''.join(
            f'<paletteEntry value="{v}" color="{c}" label="{label}" alpha="255"/>'
            for v, label, c in entries
        )
        renderer = (
            '<rasterrenderer type="paletted" band="1"><colorPalette>'
            f'{items}</colorPalette></rasterrenderer>'
        )
    else:
        items = ''.join(
            f'<item value="{v}" color="{c}" label="{label}" alpha="255"/>'
            for v, label, c in entries
        )
        renderer = (
            '<rasterrenderer type="singlebandpseudocolor" band="1"><rastershader>'
            f'<colorrampshader colorRampType="EXACT">{items}</colorrampshader>'
            '</rastershader></rasterrenderer>'
        )
    sidecar.write_text(
        f'<!DOCTYPE qgis><qgis version="3.34"><pipe>{renderer}</pipe></qgis>'
    )
    return sidecar


@pytest.fixture(scope='session')
def mask_files() -> SimpleNamespace:
    """Writers of palette PNG masks and of class-name sidecars beside masks."""
    return SimpleNamespace(
        PALETTE=PALETTE,
        palette_png=palette_png,
        aux_xml_rat=aux_xml_rat,
        aux_xml_categories=aux_xml_categories,
        qml=qml,
    )
