import numpy as np
import rasterio

from dspt_geo.data import group_rasters, scan_rasters
from dspt_geo.data.synthetic import (
    LANDSCAPE_CLASSES,
    builtin_sample,
    landscape,
    write_sample_rasters,
)


def test_landscape_is_deterministic_and_has_every_class():
    a, b = landscape(256, seed=4), landscape(256, seed=4)

    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, landscape(256, seed=5))
    assert set(np.unique(a)) == set(range(len(LANDSCAPE_CLASSES)))


def test_sample_rasters_form_an_optical_and_a_sar_group(tmp_path):
    write_sample_rasters(tmp_path, size=128)

    groups = {g.name: g for g in group_rasters(scan_rasters([tmp_path]).rasters)}

    assert set(groups) == {'4band-uint16-blue-green-red-nir', '2band-float32-VV-VH'}
    with rasterio.open(
        groups['4band-uint16-blue-green-red-nir'].rasters[0].path
    ) as src:
        optical = src.read()
        assert src.nodata == 0 and src.block_shapes[0] == (256, 256)
    assert (optical == 0).all(axis=0).any(), 'a nodata swath edge'
    assert groups['2band-float32-VV-VH'].res == (20.0, 20.0)


def test_builtin_sample_is_written_once(tmp_path):
    folder = builtin_sample(tmp_path)
    stamp = (folder / 'optical' / 'landscape.tif').stat().st_mtime_ns

    assert builtin_sample(tmp_path) == folder
    assert (folder / 'optical' / 'landscape.tif').stat().st_mtime_ns == stamp
