from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from dspt_geo.predict import writers
from dspt_geo.predict.overviews import cog_overview_sizes, mode_overviews
from dspt_geo.predict.writers import CogWriter

TRANSFORM = from_origin(500_000, 4_000_000, 2.0, 2.0)


def _classes(
    rng: np.random.Generator, height: int, width: int, classes: int, blob: int
) -> np.ndarray:
    """Classes in blob x blob squares (majorities) with noise (ties)."""
    coarse = rng.integers(0, classes, (height // blob + 1, width // blob + 1))
    data = np.repeat(np.repeat(coarse, blob, 0), blob, 1)[:height, :width]
    noise = rng.random((height, width)) < 0.3
    data[noise] = rng.integers(0, classes, int(noise.sum()))
    return data.astype(np.uint8)


def _gdal_levels(
    data: np.ndarray, blocksize: int, nodata: int | None, path: Path
) -> list[np.ndarray]:
    """The overviews GDAL's COG driver computes with MODE (a colour table, as ours)."""
    height, width = data.shape
    with rasterio.open(
        'gdal', 'w', driver='MEM', width=width, height=height, count=1,
        dtype='uint8', crs='EPSG:32633', transform=TRANSFORM, nodata=nodata,
    ) as mem:  # fmt: skip
        mem.write_colormap(1, {i: (i, i, i, 255) for i in range(256)})
        mem.write(data, 1)
        rasterio.shutil.copy(
            mem, path, driver='COG', BLOCKSIZE=blocksize,
            OVERVIEW_RESAMPLING='MODE', NUM_THREADS=1,
        )  # fmt: skip
    with rasterio.open(path) as src:
        levels = len(src.overviews(1))
    out = []
    for level in range(levels):
        with rasterio.open(path, overview_level=level) as src:
            out.append(src.read(1))
    return out


@pytest.mark.parametrize(
    ('height', 'width', 'classes', 'blocksize', 'nodata'),
    [
        (900, 900, 2, 512, 255),  # the SpaceNet sample's size: one level
        (901, 777, 3, 128, 255),  # odd sides: windows of 3 pixels, 3 levels
        (1333, 2047, 5, 256, 0),  # nodata 0, a class value elsewhere
        (600, 1500, 4, 128, None),  # no nodata: every value counts
        (515, 130, 2, 64, 255),  # one side at 1 block, the other 8
    ],
)
def test_mode_overviews_are_gdals(
    tmp_path: Path,
    rng: np.random.Generator,
    height: int,
    width: int,
    classes: int,
    blocksize: int,
    nodata: int | None,
) -> None:
    data = _classes(rng, height, width, classes, blob=3)
    if nodata is not None:
        data[rng.random(data.shape) < 0.2] = nodata
        data[:40, :60] = nodata  # whole windows of nodata
    expected = _gdal_levels(data, blocksize, nodata, tmp_path / 'gdal.tif')
    ours = mode_overviews(data, blocksize, nodata)
    assert [level.shape[::-1] for level in ours] == cog_overview_sizes(
        width, height, blocksize
    )
    assert len(ours) == len(expected) >= 1
    for level, (mine, gdals) in enumerate(zip(ours, expected, strict=True)):
        np.testing.assert_array_equal(mine, gdals, err_msg=f'level {level}')
    # Ties happen (else the test would not check GDAL's tie rule).
    blocks = data[: height // 2 * 2, : width // 2 * 2].reshape(
        height // 2, 2, width // 2, 2
    )
    pairs = (blocks[:, 0, :, 0] == blocks[:, 0, :, 1]) & (
        blocks[:, 1, :, 0] == blocks[:, 1, :, 1]
    )
    assert (pairs & (blocks[:, 0, :, 0] != blocks[:, 1, :, 0])).any()


def test_cog_with_computed_overviews_is_byte_identical(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The class COG of a raster held in memory gets its mode overviews from
    # numpy (issue 16); the file must be the one GDAL makes itself (here from a
    # raster staged in a file, whose overviews GDAL computes).
    data = _classes(rng, 701, 1030, 3, blob=4)
    data[:50, :70] = 255
    paths = []
    for own in (True, False):
        if not own:
            monkeypatch.setattr(writers, '_MEMORY_PIXELS', 0)
        path = tmp_path / f'own-{own}.tif'
        writer = CogWriter(
            path, crs=CRS.from_epsg(32633), transform=TRANSFORM, width=1030,
            height=701, descriptions=('class',), overview_resampling='mode',
            colormap={0: (1, 2, 3, 255), 1: (4, 5, 6, 255), 255: (0, 0, 0, 0)},
            tags={'TASK': 'segment'}, blocksize=256,
        )  # fmt: skip
        assert writer._own_overviews == own
        for row in range(0, 701, 48):
            writer.write(row, data[row : row + 48])
        paths.append(writer.commit())
    ours, gdals = paths
    assert ours.read_bytes() == gdals.read_bytes()
    with rasterio.open(ours) as src:
        assert src.overviews(1) == [2, 4, 8]
        np.testing.assert_array_equal(src.read(1), data)
    assert cog_validate(ours)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'own-False.tif',
        'own-True.tif',
    ], 'no temporary file is left'
