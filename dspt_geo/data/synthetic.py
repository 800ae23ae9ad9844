"""A small synthetic landscape, generated deterministically: the built-in sample.

The tool must run with no network and no files from the user, so it ships a
generator instead of data: a land-cover map (cropland parcels, forest, water, roads,
buildings) rendered as a 4-band optical image (blue, green, red, near-infrared
reflectance x 10000, uint16, with a nodata swath edge) and as a Sentinel-1-like SAR
pair (VV and VH backscatter in dB, float32, one band per file, coarser pixels).
The same seed always gives the same rasters.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from ..cache import default_cache_dir
from ..outputs import atomic_write

__all__ = (
    'LANDSCAPE_CLASSES',
    'LANDSCAPE_COLOURS',
    'builtin_sample',
    'landscape',
    'write_sample_chips',
    'write_sample_labels',
    'write_sample_rasters',
    'write_sample_scene',
)

#: Land-cover classes of the synthetic landscape, by class index.
LANDSCAPE_CLASSES = ('cropland', 'forest', 'water', 'road', 'building')

#: Display colour (``#rrggbb``) per class, in :data:`LANDSCAPE_CLASSES` order.
LANDSCAPE_COLOURS = ('#e8d174', '#2e7d32', '#1e63c8', '#8a8a8a', '#d8342c')

#: Value of unlabelled pixels (the swath edge) in the label raster.
LABEL_NODATA = 255

#: Mean reflectance (blue, green, red, nir) per class, of the order of Sentinel-2's.
_REFLECTANCE = np.array([
    [0.05, 0.09, 0.07, 0.35],  # cropland
    [0.03, 0.06, 0.03, 0.30],  # forest
    [0.06, 0.07, 0.04, 0.02],  # water
    [0.12, 0.13, 0.14, 0.18],  # road
    [0.20, 0.20, 0.22, 0.25],  # building
])  # fmt: skip

#: Mean backscatter (VV, VH) in dB per class.
_BACKSCATTER_DB = np.array([
    [-11.0, -18.0], [-8.0, -13.0], [-22.0, -28.0], [-14.0, -22.0], [-2.0, -9.0],
])  # fmt: skip

#: Bump when the generator's output changes, so a cached sample is rewritten.
SAMPLE_VERSION = 1

_CRS = CRS.from_epsg(32633)
_ORIGIN = (500_000.0, 5_000_000.0)
_PIXEL = 10.0


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], cell: int
) -> npt.NDArray[np.float64]:
    """Random field smooth over about *cell* pixels, values in [0, 1]."""
    coarse = rng.random((shape[0] // cell + 2, shape[1] // cell + 2))
    rows = np.arange(shape[0]) / cell
    cols = np.arange(shape[1]) / cell
    r0, c0 = rows.astype(int), cols.astype(int)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    field = top * (1 - fr) + bottom * fr
    return (field - field.min()) / (field.max() - field.min())


def landscape(size: int = 512, seed: int = 0) -> npt.NDArray[np.uint8]:
    """Land-cover class map (indexes into :data:`LANDSCAPE_CLASSES`).

    Args:
        size: side in pixels.
        seed: random seed.

    Returns:
        uint8 array of shape (size, size).
    """
    rng = np.random.default_rng(seed)
    classes = np.zeros((size, size), np.uint8)
    relief = _smooth_noise(rng, (size, size), max(8, size // 6))
    classes[relief > 0.62] = 1
    classes[relief < 0.18] = 2
    for _ in range(max(1, size // 160)):
        row = int(rng.integers(size // 8, size - size // 8))
        col = int(rng.integers(size // 8, size - size // 8))
        classes[row - 2 : row + 2, :] = 3
        classes[:, col - 2 : col + 2] = 3
        for _ in range(size // 24):
            along = int(rng.integers(4, size - 16))
            offset = int(rng.integers(5, 14)) * rng.choice([-1, 1])
            h, w = (int(v) for v in rng.integers(5, 11, size=2))
            r, c = (
                (row + offset, along) if rng.random() < 0.5 else (along, col + offset)
            )
            block = classes[r : r + h, c : c + w]
            block[block != 3] = 4
    return classes


def _render_optical(
    classes: npt.NDArray[np.uint8], rng: np.random.Generator
) -> npt.NDArray[np.uint16]:
    """Reflectance x 10000 for the class map, with per-parcel and pixel texture."""
    size = classes.shape[0]
    parcels = _smooth_noise(rng, classes.shape, max(4, size // 24))
    texture = rng.normal(0, 0.008, (4, *classes.shape))
    reflectance = _REFLECTANCE[classes].transpose(2, 0, 1) * (0.8 + 0.4 * parcels)
    return np.clip((reflectance + texture) * 10000, 1, 65535).astype(np.uint16)


def _render_sar(
    classes: npt.NDArray[np.uint8], rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Backscatter in dB at half resolution, with speckle."""
    coarse = classes[::2, ::2]
    linear = 10 ** (_BACKSCATTER_DB[coarse].transpose(2, 0, 1) / 10)
    speckle = rng.gamma(4.0, 1 / 4.0, linear.shape)
    return (10 * np.log10(linear * speckle)).astype(np.float32)


def write_sample_rasters(
    folder: str | os.PathLike[str], size: int = 512, seed: int = 0
) -> list[Path]:
    """Write the sample landscape's rasters under *folder*.

    Writes ``optical/landscape.tif`` (4 bands, uint16, nodata 0 along a swath
    edge, 10 m) and ``sar/landscape_VV.tif`` and ``sar/landscape_VH.tif`` (float32
    dB, nodata -9999, 20 m), all in UTM 33N, tiled and compressed.

    Args:
        folder: output folder (created).
        size: side of the optical image in pixels.
        seed: random seed.

    Returns:
        the written files.
    """
    root = Path(folder)
    rng = np.random.default_rng(seed + 1)
    classes = landscape(size, seed)
    optical = _render_optical(classes, rng)
    optical[:, _swath_edge(size)] = 0
    sar = _render_sar(classes, rng)

    written = [root / 'optical' / 'landscape.tif']
    _write(
        written[0],
        optical,
        _PIXEL,
        nodata=0,
        descriptions=('blue', 'green', 'red', 'nir'),
    )
    for band, layer in zip(('VV', 'VH'), sar, strict=True):
        path = root / 'sar' / f'landscape_{band}.tif'
        _write(path, layer[None], 2 * _PIXEL, nodata=-9999.0, descriptions=(band,))
        written.append(path)
    return written


def _swath_edge(size: int) -> npt.NDArray[np.bool_]:
    """Pixels beyond the slanted swath edge of a *size* image (nodata)."""
    rows, cols = np.mgrid[:size, :size]
    return cols > size - size // 10 + rows // 6  # type: ignore[no-any-return]


def write_sample_labels(
    folder: str | os.PathLike[str], size: int = 512, seed: int = 0
) -> list[Path]:
    """Write the labels of the sample landscape of :func:`write_sample_rasters`.

    Writes, aligned with ``optical/landscape.tif`` of the same *size* and *seed*:
    ``labels/landcover.tif`` (uint8 class indexes into :data:`LANDSCAPE_CLASSES`,
    nodata 255 beyond the swath edge), ``labels/classes.json`` (the class table:
    names, colours, values, as :meth:`~dspt_geo.data.labels.ClassTable.read`
    reads it) and ``labels/buildings.gpkg`` (one polygon per connected group of
    building pixels inside the swath, column ``class`` = ``'building'``).

    Args:
        folder: output folder (created).
        size: side of the optical image in pixels.
        seed: random seed.

    Returns:
        the written files.

    .. versionadded:: 0.1
    """
    import geopandas as gpd
    import shapely
    from rasterio.features import shapes

    root = Path(folder) / 'labels'
    classes = landscape(size, seed)
    classes[_swath_edge(size)] = LABEL_NODATA
    raster = root / 'landcover.tif'
    _write(raster, classes[None], _PIXEL, nodata=LABEL_NODATA, descriptions=('class',))

    table = root / 'classes.json'
    table.write_text(
        json.dumps(
            {
                'names': list(LANDSCAPE_CLASSES),
                'colours': list(LANDSCAPE_COLOURS),
                'values': list(range(len(LANDSCAPE_CLASSES))),
            },
            indent=1,
        )
    )

    buildings = classes == LANDSCAPE_CLASSES.index('building')
    polygons = [
        shapely.geometry.shape(geometry)
        for geometry, _ in shapes(
            buildings.astype(np.uint8),
            mask=buildings,
            transform=from_origin(*_ORIGIN, _PIXEL, _PIXEL),
        )
    ]
    vectors = root / 'buildings.gpkg'
    with atomic_write(vectors) as tmp:
        gpd.GeoDataFrame(
            {'class': ['building'] * len(polygons)}, geometry=polygons, crs=_CRS
        ).to_file(tmp, layer='buildings')
    return [raster, table, vectors]


def write_sample_chips(
    folder: str | os.PathLike[str], size: int = 512, seed: int = 0, chip: int = 32
) -> list[Path]:
    """Cut the sample landscape's optical image into labelled class-folder chips.

    Each *chip* x *chip* window without nodata becomes ``CLASS/chip_ROW_COL.tif``
    (georeferenced, 4 bands uint16) in the folder of its majority land-cover class,
    the layout ``dspt-geo probe`` and ``finetune classify`` read. The pixels are
    those of :func:`write_sample_rasters` with the same *size* and *seed*.

    Args:
        folder: output folder (created).
        size: side of the landscape in pixels.
        seed: random seed.
        chip: side of the chips in pixels.

    Returns:
        the written chips.

    .. versionadded:: 0.1
    """
    root = Path(folder)
    rng = np.random.default_rng(seed + 1)
    classes = landscape(size, seed)
    optical = _render_optical(classes, rng)
    edge = _swath_edge(size)
    written = []
    for row in range(0, size - chip + 1, chip):
        for col in range(0, size - chip + 1, chip):
            window = (slice(row, row + chip), slice(col, col + chip))
            if edge[window].any():
                continue
            label = int(np.bincount(classes[window].ravel()).argmax())
            path = root / LANDSCAPE_CLASSES[label] / f'chip_{row:04d}_{col:04d}.tif'
            origin = (_ORIGIN[0] + col * _PIXEL, _ORIGIN[1] - row * _PIXEL)
            path.parent.mkdir(parents=True, exist_ok=True)
            profile = {
                'driver': 'GTiff', 'width': chip, 'height': chip, 'count': 4,
                'dtype': optical.dtype.name, 'crs': _CRS,
                'transform': from_origin(*origin, _PIXEL, _PIXEL),
            }  # fmt: skip
            with rasterio.open(path, 'w', **profile) as dst:
                dst.write(optical[:, window[0], window[1]])
                dst.descriptions = ('blue', 'green', 'red', 'nir')
            written.append(path)
    return written


def write_sample_scene(
    path: str | os.PathLike[str], size: int = 1024, seed: int = 1
) -> Path:
    """Write an unlabelled optical scene of another landscape, for prediction.

    Like ``optical/landscape.tif`` of :func:`write_sample_rasters` (4 bands,
    uint16, 10 m, nodata 0 beyond a swath edge), but placed 20 km east of it.

    Args:
        path: the GeoTIFF to write (folders created).
        size: side in pixels.
        seed: random seed.

    Returns:
        *path*.

    .. versionadded:: 0.1
    """
    path = Path(path)
    rng = np.random.default_rng(seed + 1)
    optical = _render_optical(landscape(size, seed), rng)
    optical[:, _swath_edge(size)] = 0
    _write(
        path,
        optical,
        _PIXEL,
        nodata=0,
        descriptions=('blue', 'green', 'red', 'nir'),
        origin=(_ORIGIN[0] + 20_000.0, _ORIGIN[1]),
    )
    return path


def _write(
    path: Path,
    data: npt.NDArray[np.generic],
    pixel: float,
    nodata: float,
    descriptions: tuple[str, ...],
    origin: tuple[float, float] = _ORIGIN,
) -> None:
    """Write a tiled, compressed GeoTIFF atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        profile = {
            'driver': 'GTiff',
            'width': data.shape[2],
            'height': data.shape[1],
            'count': data.shape[0],
            'dtype': data.dtype.name,
            'crs': _CRS,
            'transform': from_origin(*origin, pixel, pixel),
            'nodata': nodata,
            'tiled': True,
            'blockxsize': 256,
            'blockysize': 256,
            'compress': 'deflate',
        }
        with rasterio.open(tmp, 'w', **profile) as dst:
            dst.write(data)
            dst.descriptions = descriptions


def builtin_sample(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The built-in sample folder, written on first use.

    Args:
        cache_dir: parent folder (default: :func:`~dspt_geo.cache.default_cache_dir`).

    Returns:
        folder holding ``optical/`` and ``sar/`` rasters.
    """
    folder = Path(cache_dir or default_cache_dir()) / f'sample-v{SAMPLE_VERSION}'
    if not folder.is_dir():
        tmp = folder.with_name(f'.{folder.name}.tmp{os.getpid()}')
        write_sample_rasters(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
            if not folder.is_dir():
                raise
    return folder
