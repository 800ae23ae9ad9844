import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint

from dspt_geo.data import scan_rasters
from dspt_geo.errors import NoRastersFoundError


def test_finds_rasters_recursively_with_their_metadata(raster_writer, rng):
    raster_writer(
        'a/one.tif', rng.integers(1, 255, (3, 20, 30), dtype=np.uint8), nodata=0
    )
    raster_writer(
        'a/b/c/two.tif',
        rng.normal(size=(1, 16, 16)).astype(np.float32),
        crs='EPSG:4326',
        origin=(10.0, 50.0),
        res=0.001,
    )
    (
        raster_writer('a/one.tif', np.ones((3, 20, 30), np.uint8)).parent / 'notes.txt'
    ).write_text('x')

    result = scan_rasters(
        [raster_writer('a/x.tif', np.ones((2, 8, 8), np.int16)).parent]
    )

    by_name = {Path(r.path).name: r for r in result.rasters}
    assert set(by_name) == {'one.tif', 'two.tif', 'x.tif'}
    assert by_name['two.tif'].crs.to_epsg() == 4326
    assert by_name['two.tif'].res == pytest.approx((0.001, 0.001))
    assert by_name['x.tif'].dtype == 'int16'
    assert (by_name['one.tif'].width, by_name['one.tif'].height) == (30, 20)
    assert by_name['one.tif'].bounds == pytest.approx(
        (500_000, 4_999_800, 500_300, 5_000_000)
    )
    assert result.skipped == []


def test_band_per_file_sets_are_joined_in_band_order(raster_writer, rng):
    for band, res in [('B8A', 20), ('B02', 10), ('B11', 20), ('B04', 10)]:
        size = 40 if res == 10 else 20
        data = rng.integers(1, 5000, (1, size, size), dtype=np.uint16)
        raster_writer(f's2/T33_20200101_{band}.tif', data, res=res)
    raster_writer('s1/scene_VH.tif', np.ones((1, 8, 8), np.float32))
    raster_writer('s1/scene_VV.tif', np.ones((1, 8, 8), np.float32))
    raster_writer('s1/lonely_B02.tif', np.ones((1, 8, 8), np.float32))

    rasters = scan_rasters(
        [raster_writer('s2/x.tif', np.ones((1, 2, 2), np.uint8)).parents[1]]
    ).rasters

    sets = {r.band_names: r for r in rasters if r.separate_files}
    s2 = sets[('B02', 'B04', 'B8A', 'B11')]
    assert s2.count == 4
    assert s2.res == (10.0, 10.0), 'the finest band sets the grid'
    assert [Path(p).name for p in s2.band_paths] == [
        'T33_20200101_B02.tif',
        'T33_20200101_B04.tif',
        'T33_20200101_B8A.tif',
        'T33_20200101_B11.tif',
    ]
    assert ('VV', 'VH') in sets
    assert not any(
        r.separate_files for r in rasters if Path(r.path).name == 'lonely_B02.tif'
    )


@pytest.mark.parametrize(
    ('kind', 'reason'),
    [
        ('corrupt', 'GDAL cannot open it'),
        ('no_crs', 'has no CRS'),
        ('gcps', 'ground control points'),
        ('all_nodata', 'no valid pixel'),
    ],
)
def test_unusable_files_are_skipped_with_a_reason(
    tmp_path, raster_writer, kind, reason, caplog
):
    good = raster_writer('good.tif', np.ones((1, 8, 8), np.uint8))
    bad = tmp_path / 'bad.tif'
    match kind:
        case 'corrupt':
            bad.write_bytes(b'II*\x00' + bytes(range(256)) * 4)
        case 'no_crs':
            raster_writer('bad.tif', np.ones((1, 8, 8), np.uint8), crs=None)
        case 'gcps':
            raster_writer('bad.tif', np.ones((1, 8, 8), np.uint8), crs=None)
            with rasterio.open(bad, 'r+') as dst:
                dst.gcps = (
                    [
                        GroundControlPoint(0, 0, 10, 50),
                        GroundControlPoint(8, 8, 11, 49),
                    ],
                    'EPSG:4326',
                )
        case 'all_nodata':
            raster_writer('bad.tif', np.zeros((2, 8, 8), np.uint16), nodata=0)

    with caplog.at_level(logging.WARNING):
        result = scan_rasters([tmp_path])

    assert [r.path for r in result.rasters] == [str(good)]
    assert len(result.skipped) == 1
    assert result.skipped[0].path == str(bad)
    assert reason in result.skipped[0].reason
    assert str(bad) in caplog.text


def test_no_raster_is_a_clear_error(tmp_path):
    (tmp_path / 'readme.md').write_text('nothing here')
    with pytest.raises(
        NoRastersFoundError, match='no usable georeferenced raster found'
    ):
        scan_rasters([tmp_path])


def test_missing_path_is_named(tmp_path):
    with pytest.raises(NoRastersFoundError, match=r'no such file or folder: .*nope'):
        scan_rasters([tmp_path / 'nope'])


def test_rotated_raster_is_indexed_by_its_north_up_envelope(raster_writer):
    from affine import Affine

    transform = (
        Affine.translation(500_000, 5_000_000)
        @ Affine.rotation(30)
        @ Affine.scale(10, -10)
    )
    path = raster_writer('rot.tif', np.ones((1, 20, 20), np.uint8), transform=transform)

    (raster,) = scan_rasters([path]).rasters

    assert not raster.north_up
    left, bottom, right, top = raster.bounds
    assert right - left > 200 and top - bottom > 200, (
        'envelope of a rotated 200 m square'
    )
