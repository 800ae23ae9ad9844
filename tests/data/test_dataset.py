import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchgeo.datasets import RasterDataset, stack_samples
from torchgeo.samplers import GridGeoSampler, RandomGeoSampler

from dspt_geo.data import SensorDataset, group_rasters, scan_rasters


def _dataset(*paths, **kwargs):
    (group,) = group_rasters(scan_rasters(paths).rasters)
    return SensorDataset(group, **kwargs)


def _stock(dataset, query):
    """torchgeo's own RasterDataset read of the same query."""
    return RasterDataset.__getitem__(dataset, query)


@pytest.mark.parametrize(
    'dtype', [np.uint8, np.uint16, np.int16, np.float32, np.float64]
)
def test_direct_reads_equal_torchgeo_reads(raster_writer, rng, dtype):
    data = (rng.random((3, 100, 120)) * 200).astype(dtype)
    path = raster_writer('a.tif', data, tiled=True)
    dataset = _dataset(path)

    for query in RandomGeoSampler(dataset, 32, length=10):
        ours = dataset[query]
        assert dataset._direct_read_target(query)[0] is not None, 'took the direct path'
        stock = _stock(dataset, query)
        assert ours['image'].dtype == torch.float32
        assert ours['image'].shape == (3, 32, 32)
        assert ours['crs'] == dataset.crs
        assert ours['bounds'] == query
        torch.testing.assert_close(ours['image'], stock['image'])


def test_window_matches_the_pixels_it_names(raster_writer):
    data = np.arange(50 * 60, dtype=np.uint16).reshape(1, 50, 60)
    dataset = _dataset(raster_writer('a.tif', data, origin=(1000.0, 2000.0), res=2.0))

    # columns 5..15, rows 10..18 of the file
    sample = dataset[1010.0:1030.0, 2000.0 - 36 : 2000.0 - 20]

    np.testing.assert_array_equal(sample['image'][0].numpy(), data[0, 10:18, 5:15])


def test_queries_spanning_files_or_crs_take_the_general_path(raster_writer, rng):
    a = rng.integers(1, 100, (2, 64, 64), dtype=np.uint16)
    b = rng.integers(1, 100, (2, 64, 64), dtype=np.uint16)
    raster_writer('t/a.tif', a, origin=(0.0, 640.0), crs='EPSG:32633')
    raster_writer('t/b.tif', b, origin=(640.0, 640.0), crs='EPSG:32633')
    dataset = _dataset(
        raster_writer('t/a.tif', a, origin=(0.0, 640.0), crs='EPSG:32633').parent
    )

    across = dataset[600.0:680.0, 100.0:180.0]

    assert (
        dataset._direct_read_target((slice(600.0, 680.0), slice(100.0, 180.0)))[0]
        is None
    )
    np.testing.assert_array_equal(across['image'][:, :, :4].numpy(), a[:, 46:54, 60:64])
    np.testing.assert_array_equal(across['image'][:, :, 4:].numpy(), b[:, 46:54, 0:4])


def test_reprojected_and_resampled_group_serves_full_patches(raster_writer, rng):
    raster_writer(
        'm/utm.tif', rng.integers(1, 100, (1, 80, 80), dtype=np.uint8), res=10
    )
    raster_writer(
        'm/utm2.tif',
        rng.integers(1, 100, (1, 80, 80), dtype=np.uint8),
        origin=(510_000.0, 5_000_000.0),
        res=10,
    )
    raster_writer(
        'm/geo.tif',
        rng.integers(1, 100, (1, 90, 90), dtype=np.uint8),
        crs='EPSG:4326',
        origin=(15.0, 45.2),
        res=0.0001,
    )
    dataset = _dataset(
        raster_writer(
            'm/utm.tif', rng.integers(1, 100, (1, 80, 80), dtype=np.uint8)
        ).parent
    )

    assert dataset.crs.to_epsg() == 32633
    samples = [dataset[q] for q in RandomGeoSampler(dataset, 24, length=30)]

    assert all(s['image'].shape == (1, 24, 24) for s in samples)
    assert all(torch.isfinite(s['image']).all() for s in samples)


def test_band_files_of_different_resolutions_stack(raster_writer, rng):
    raster_writer(
        's2/x_B02.tif', rng.integers(1, 9, (1, 40, 40), dtype=np.uint16), res=10
    )
    raster_writer('s2/x_B05.tif', np.full((1, 20, 20), 7, np.uint16), res=20)
    dataset = _dataset(
        raster_writer(
            's2/x_B03.tif', rng.integers(1, 9, (1, 40, 40), dtype=np.uint16), res=10
        ).parent
    )

    sample = dataset[500_000.0:500_160.0, 4_999_700.0:4_999_860.0]

    assert dataset.bands == ('B02', 'B03', 'B05')
    assert sample['image'].shape == (3, 16, 16)
    assert torch.all(sample['image'][2] == 7), '20 m band resampled onto the 10 m grid'


def test_band_selection_by_name(raster_writer, rng):
    data = rng.integers(1, 9, (4, 32, 32), dtype=np.uint16)
    path = raster_writer('a.tif', data, descriptions=['blue', 'green', 'red', 'nir'])
    dataset = _dataset(path, bands=['nir', 'red'])

    sample = dataset[500_000.0:500_320.0, 4_999_680.0:5_000_000.0]

    np.testing.assert_array_equal(
        sample['image'].numpy(), data[[3, 2]].astype(np.float32)
    )
    with pytest.raises(ValueError, match='not in group'):
        _dataset(path, bands=['swir'])


def test_complex_sar_becomes_db_with_zero_as_nodata(raster_writer, rng):
    z = (rng.normal(size=(1, 32, 32)) + 1j * rng.normal(size=(1, 32, 32))).astype(
        np.complex64
    )
    z[0, :4] = 0
    dataset = _dataset(raster_writer('slc.tif', z))

    image = dataset[500_000.0:500_320.0, 4_999_680.0:5_000_000.0]['image']

    np.testing.assert_allclose(
        image[0, 4:].numpy(), 10 * np.log10(np.abs(z[0, 4:]) ** 2), atol=1e-5
    )
    valid = dataset.valid_mask(image)
    assert not valid[:4].any() and valid[4:].all()


def test_valid_mask_uses_nodata_across_bands(raster_writer):
    data = np.full((2, 8, 8), 5, np.uint16)
    data[:, 0, 0] = 0  # nodata in every band: invalid
    data[0, 1, 1] = 0  # nodata in one band only: still holds data
    dataset = _dataset(raster_writer('a.tif', data, nodata=0))

    valid = dataset.valid_mask(
        dataset[500_000.0:500_080.0, 4_999_920.0:5_000_000.0]['image']
    )

    assert not valid[0, 0]
    assert valid.sum() == 63


def test_pickles_without_open_files_and_reads_in_workers(raster_writer, rng):
    dataset = _dataset(
        raster_writer('a.tif', rng.integers(1, 9, (2, 64, 64), dtype=np.uint16))
    )
    dataset[500_000.0:500_080.0, 4_999_920.0:5_000_000.0]
    assert dataset._handles

    clone = pickle.loads(pickle.dumps(dataset))
    assert not clone._handles

    loader = DataLoader(
        dataset,
        sampler=GridGeoSampler(dataset, 16, 16),
        batch_size=4,
        num_workers=2,
        collate_fn=stack_samples,
    )
    images = torch.cat([batch['image'] for batch in loader])
    assert images.shape == (16, 2, 16, 16)


def test_setting_crs_is_quiet_and_keeps_reads_right(raster_writer, rng, capsys):
    data = rng.integers(1, 9, (1, 64, 64), dtype=np.uint16)
    dataset = _dataset(raster_writer('a.tif', data))

    dataset.crs = 'EPSG:3857'
    dataset.res = 10.0
    samples = [dataset[q] for q in RandomGeoSampler(dataset, 16, length=5)]

    assert capsys.readouterr().out == ''
    assert all(s['image'].shape == (1, 16, 16) for s in samples)


def test_consecutive_reads_honour_overlaps_and_shared_edges(raster_writer):
    # a and b share an edge; c overlaps b. Values identify the file read.
    raster_writer('t/a.tif', np.full((1, 32, 32), 1, np.uint8), origin=(0.0, 320.0))
    raster_writer('t/b.tif', np.full((1, 32, 32), 2, np.uint8), origin=(320.0, 320.0))
    path = raster_writer(
        't/c.tif', np.full((1, 32, 32), 3, np.uint8), origin=(480.0, 320.0)
    )
    dataset = _dataset(path.parent)
    assert dataset._isolated == [True, False, False]

    reads = [
        ((0.0, 80.0), 1),  # inside a
        ((10.0, 90.0), 1),  # a again (shortcut: a is isolated)
        ((330.0, 410.0), 2),  # inside b only
    ]
    for (x0, x1), value in reads:
        image = dataset[x0:x1, 100.0:180.0]['image']
        assert torch.all(image == value), (x0, value)
    mixed = dataset[490.0:570.0, 100.0:180.0]['image']  # inside b and c: merged
    assert (
        dataset._direct_read_target((slice(490.0, 570.0), slice(100.0, 180.0)))[0]
        is None
    )
    assert set(mixed.unique().tolist()) <= {2.0, 3.0}
