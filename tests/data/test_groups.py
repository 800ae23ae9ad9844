import logging

import numpy as np

from dspt_geo.data import group_rasters, scan_rasters


def _groups(tmp_path, **kwargs):
    return group_rasters(scan_rasters([tmp_path]).rasters, **kwargs)


def test_groups_by_band_layout(tmp_path, raster_writer, rng):
    raster_writer('s2/a.tif', rng.integers(1, 9, (4, 16, 16), dtype=np.uint16))
    raster_writer(
        's2/b.tif', rng.integers(1, 9, (4, 16, 16), dtype=np.uint16), crs='EPSG:32634'
    )
    raster_writer('rgb/c.tif', rng.integers(1, 9, (4, 16, 16), dtype=np.uint8))
    raster_writer('s1/d_VV.tif', rng.normal(size=(1, 8, 8)).astype(np.float32))
    raster_writer('s1/d_VH.tif', rng.normal(size=(1, 8, 8)).astype(np.float32))
    raster_writer(
        'named.tif',
        rng.integers(1, 9, (4, 16, 16), dtype=np.uint16),
        descriptions=['b', 'g', 'r', 'n'],
    )

    groups = {g.name: g for g in _groups(tmp_path)}

    assert set(groups) == {
        '4band-uint16',
        '4band-uint8',
        '2band-float32-VV-VH',
        '4band-uint16-b-g-r-n',
    }
    assert len(groups['4band-uint16'].rasters) == 2
    assert groups['2band-float32-VV-VH'].bands == ('VV', 'VH')
    assert groups['4band-uint8'].bands == ('band_1', 'band_2', 'band_3', 'band_4')


def test_group_crs_is_where_most_pixels_are_and_res_its_median(tmp_path, raster_writer):
    raster_writer('big.tif', np.ones((1, 64, 64), np.uint8), crs='EPSG:32633', res=10)
    raster_writer('mid.tif', np.ones((1, 32, 32), np.uint8), crs='EPSG:32633', res=30)
    raster_writer('mid2.tif', np.ones((1, 32, 32), np.uint8), crs='EPSG:32633', res=20)
    raster_writer(
        'other.tif',
        np.ones((1, 70, 70), np.uint8),
        crs='EPSG:3035',
        origin=(4e6, 3e6),
        res=5,
    )

    (group,) = _groups(tmp_path)

    assert group.crs.to_epsg() == 32633
    assert group.res == (20.0, 20.0)


def test_crs_res_and_nodata_can_be_set(tmp_path, raster_writer):
    raster_writer('a.tif', np.ones((1, 16, 16), np.uint8), nodata=0)

    (group,) = _groups(tmp_path, crs='EPSG:3857', res=7.5, nodata=255)

    assert group.crs.to_epsg() == 3857
    assert group.res == (7.5, 7.5)
    assert group.nodata == 255


def test_disagreeing_nodata_warns_and_takes_the_commonest(
    tmp_path, raster_writer, caplog
):
    for i, nodata in enumerate([0, 0, 9]):
        raster_writer(f'{i}.tif', np.ones((1, 8, 8), np.uint8) * 3, nodata=nodata)

    with caplog.at_level(logging.WARNING):
        (group,) = _groups(tmp_path)

    assert group.nodata == 0
    assert 'different nodata values' in caplog.text


def test_stacked_and_band_file_layouts_get_distinct_names(tmp_path, raster_writer):
    raster_writer(
        'stack.tif', np.ones((2, 8, 8), np.float32), descriptions=['VV', 'VH']
    )
    raster_writer('pair_VV.tif', np.ones((1, 8, 8), np.float32))
    raster_writer('pair_VH.tif', np.ones((1, 8, 8), np.float32))

    names = sorted(g.name for g in _groups(tmp_path))

    assert names == ['2band-float32-VV-VH', '2band-float32-VV-VH-2']
