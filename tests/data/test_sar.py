import numpy as np
import pytest

from dspt_geo.data import complex_to_backscatter


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
