import numpy as np
import pytest
import torch

from dspt_geo.data import (
    SarConversion,
    SensorDataset,
    complex_to_backscatter,
    group_rasters,
    scan_rasters,
)
from dspt_geo.data.summary import describe_rasters, format_description


def test_modes_follow_their_formulas():
    z = np.array([3 + 4j, 1j, 0], dtype=np.complex64)

    amplitude = complex_to_backscatter(z, 'amplitude')
    intensity = complex_to_backscatter(z, 'intensity')
    db = complex_to_backscatter(z, 'db')

    np.testing.assert_allclose(amplitude[:2], [5, 1])
    np.testing.assert_allclose(intensity[:2], [25, 1])
    np.testing.assert_allclose(db[:2], [10 * np.log10(25), 0], atol=1e-6)
    assert all(a.dtype == np.float32 for a in (amplitude, intensity, db))
    assert np.isnan(amplitude[2]) and np.isnan(db[2]), 'a zero sample carries no signal'


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match='unknown SAR mode'):
        complex_to_backscatter(np.ones(2, np.complex64), 'phase')


# -- real-valued SAR (issue 11) ----------------------------------------------------


def _one_group(folder):
    (group,) = group_rasters(scan_rasters([folder]).rasters)
    return group


def _read_all(group, **kwargs):
    dataset = SensorDataset(group, **kwargs)
    left, bottom, right, top = dataset.index.total_bounds
    xres, yres = dataset.res
    return dataset, dataset[left:right:xres, bottom:top:yres]['image'].numpy()


def _power(rng, shape=(2, 48, 40)):
    """Sentinel-1-like sigma0 in linear power: gamma speckle over a few decades."""
    mean = 10 ** rng.uniform(-2.5, -0.3, size=shape)
    return (mean * rng.gamma(4.4, 1 / 4.4, size=shape)).astype(np.float32)


def test_linear_power_auto_is_10_log10(tmp_path, raster_writer, rng):
    power = _power(rng)
    power[:, :3, :] = 0  # outside the swath: no signal
    raster_writer('s1/power.tif', power, descriptions=['VV', 'VH'])

    group = _one_group(tmp_path / 's1')
    dataset, image = _read_all(group)

    assert group.sar_scale == 'intensity'
    assert dataset.sar == SarConversion('intensity', 'db')
    np.testing.assert_allclose(image[:, 3:], 10 * np.log10(power[:, 3:]), rtol=1e-5)
    assert np.isnan(image[:, :3]).all(), 'zero power carries no signal'
    assert not dataset.valid_mask(torch.from_numpy(image))[:3].any()


def test_amplitude_dn_is_20_log10(tmp_path, raster_writer, rng):
    amplitude = np.sqrt(_power(rng, (1, 40, 40)) * 1e6).astype(np.uint16)
    amplitude[0, 0, :5] = 0  # nodata DN
    raster_writer('grd/s1a-iw-grd-vh-001.tiff', amplitude, nodata=0)

    group = _one_group(tmp_path / 'grd')
    _, image = _read_all(group)

    assert group.sar_scale == 'amplitude'
    valid = amplitude > 0
    np.testing.assert_allclose(
        image[valid], 20 * np.log10(amplitude[valid].astype(np.float64)), rtol=1e-5
    )
    assert np.isnan(image[~valid]).all()


def test_db_is_left_alone(tmp_path, raster_writer, rng):
    db = (10 * np.log10(_power(rng, (1, 32, 32)))).astype(np.float32)
    db[0, 0, 0] = -9999
    raster_writer('db/scene_HH.tif', db, nodata=-9999)

    group = _one_group(tmp_path / 'db')
    _, image = _read_all(group)

    assert group.sar_scale == 'db'
    np.testing.assert_array_equal(image[0].ravel()[1:], db[0].ravel()[1:])
    assert np.isnan(image[0, 0, 0])


@pytest.mark.parametrize(
    ('mode', 'formula'),
    [
        ('intensity', lambda p: p),
        ('amplitude', np.sqrt),
        ('db', lambda p: 10 * np.log10(p)),
    ],
)
def test_explicit_modes_convert_power(tmp_path, raster_writer, rng, mode, formula):
    power = _power(rng, (1, 16, 16))
    raster_writer('p/x_VV.tif', power)

    _, image = _read_all(_one_group(tmp_path / 'p'), sar_mode=mode)

    np.testing.assert_allclose(image, formula(power.astype(np.float64)), rtol=1e-5)


def test_optical_look_alike_is_not_sar(tmp_path, raster_writer, rng):
    # Reflectance in (0, 1] looks like linear power, but no band is a polarisation.
    raster_writer(
        'o/reflectance.tif', rng.uniform(0, 1, (3, 16, 16)).astype(np.float32)
    )

    group = _one_group(tmp_path / 'o')
    _, image = _read_all(group)

    assert group.sar_scale is None
    assert (image >= 0).all()


def test_info_prints_the_decision(tmp_path, raster_writer, rng):
    raster_writer('a/power_VV.tif', _power(rng, (1, 16, 16)))

    description = describe_rasters([tmp_path / 'a'])
    (group,) = description['groups']

    assert group['sar'] == {
        'sar_scale': 'intensity',
        'sar_mode': 'db',
        'conversion': 'linear power -> dB (10 log10)',
    }
    assert 'SAR        linear power -> dB (10 log10)' in format_description(description)


def test_real_sentinel1_grd_is_detected_as_db(shared_data):
    (group,) = group_rasters(
        scan_rasters([shared_data / 'sar' / 's1a_iw_vv_grd_db.tif']).rasters
    )
    assert group.sar_scale == 'db'
    assert str(SensorDataset(group).sar) == 'dB -> dB (as stored)'


def test_conversion_round_trips_through_model_metadata():
    conversion = SarConversion('amplitude', 'db')
    assert SarConversion.from_dict(conversion.to_dict()) == conversion
    # Files written before issue 11 name the mode of complex SAR only.
    assert SarConversion.from_dict({'sar_mode': 'db'}) == SarConversion('complex', 'db')
    assert SarConversion.from_dict({'sar_mode': None}) is None
