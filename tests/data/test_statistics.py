import json
import os

import numpy as np
import pytest

from dspt_geo.data import SensorDataset, group_rasters, scan_rasters
from dspt_geo.data import statistics as statistics_module
from dspt_geo.data.statistics import (
    BandStatistics,
    compute_statistics,
    load_or_compute_statistics,
)


@pytest.fixture
def dataset(raster_writer, rng):
    data = np.stack(
        [rng.normal(100, 10, (96, 96)), rng.normal(-5, 2, (96, 96))]
    ).astype(np.float32)
    data[:, :20, :] = -9999  # nodata rows that must not count
    path = raster_writer('a.tif', data, nodata=-9999)
    (group,) = group_rasters(scan_rasters([path]).rasters)
    return SensorDataset(group), data[:, 20:, :]


def test_statistics_describe_the_valid_pixels(dataset):
    ds, valid = dataset

    stats = compute_statistics(ds, num_patches=32, size=48)

    assert stats.bands == ('band_1', 'band_2')
    np.testing.assert_allclose(
        stats.mean, valid.reshape(2, -1).mean(axis=1), rtol=0.02, atol=0.3
    )
    np.testing.assert_allclose(stats.std, valid.reshape(2, -1).std(axis=1), rtol=0.1)
    np.testing.assert_allclose(
        stats.p02, np.percentile(valid.reshape(2, -1), 2, axis=1), rtol=0.1
    )
    assert all(
        lo < mid < hi
        for lo, mid, hi in zip(stats.p02, stats.p50, stats.p98, strict=True)
    )


def test_memory_is_bounded_by_max_pixels(dataset):
    stats = compute_statistics(dataset[0], num_patches=10, size=48, max_pixels=1000)
    assert stats.pixels <= 1000


def test_round_trips_through_a_dict():
    stats = BandStatistics(('a',), (1.0,), (2.0,), (0.0,), (1.0,), (3.0,), 10)
    assert BandStatistics.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats


def test_cached_until_a_file_changes(dataset, tmp_path, monkeypatch):
    ds, _ = dataset
    first = load_or_compute_statistics(ds, tmp_path / 'cache', num_patches=8, size=32)
    assert len(list((tmp_path / 'cache').glob('stats-*.json'))) == 1

    def fail(*args, **kwargs):
        raise AssertionError('recomputed although cached')

    monkeypatch.setattr(statistics_module, 'compute_statistics', fail)
    assert (
        load_or_compute_statistics(ds, tmp_path / 'cache', num_patches=8, size=32)
        == first
    )

    path = ds.group.rasters[0].path
    os.utime(path, ns=(1, 1))
    with pytest.raises(AssertionError, match='recomputed'):
        load_or_compute_statistics(ds, tmp_path / 'cache', num_patches=8, size=32)
