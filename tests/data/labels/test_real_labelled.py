"""Labelled data on the real samples in ../shared/data (skipped when absent)."""

import warnings
from collections import Counter

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize

from dspt_geo.data.labels import BlockSplit, collate_labelled, open_labelled


@pytest.fixture
def spacenet(shared_data):
    folder = shared_data / 'labelled' / 'buildings'
    return folder / 'spacenet_pan.tif', folder / 'spacenet_buildings.geojson'


def test_spacenet_buildings_as_segmentation_masks(spacenet):
    image, labels = spacenet
    data = open_labelled('segment', image, labels, split=None, size=300)

    assert data.class_table.names == ('background', 'spacenet_buildings')
    assert data.bands == ('band_1',)
    polygons = gpd.read_file(labels)
    assert len(polygons) == 43
    with rasterio.open(image) as src:
        truth = (
            rasterize(polygons.geometry, out_shape=src.shape, transform=src.transform)
            > 0
        )
        left, top = src.transform.c, src.transform.f
    building = data.class_table.index('spacenet_buildings')
    for row in range(0, 900, 300):
        for col in range(0, 900, 300):
            bounds = (
                left + col * 0.5,
                top - (row + 300) * 0.5,
                left + (col + 300) * 0.5,
                top - row * 0.5,
            )
            sample = data.train.read(bounds)
            mask, valid = sample['mask'].numpy(), sample['valid'].numpy()
            expected = truth[row : row + 300, col : col + 300]
            np.testing.assert_array_equal(mask[valid] == building, expected[valid])
            assert (mask[~valid] == data.class_table.ignore_index).all()
    assert truth.sum() > 10_000


def test_spacenet_buildings_as_detection_boxes(spacenet):
    image, labels = spacenet
    data = open_labelled(
        'detect',
        image,
        labels,
        split=BlockSplit(size=200.0, seed=0),
        size=128,
        length=8,
    )
    polygons = gpd.read_file(labels).geometry.to_numpy()

    assert data.val is not None
    queries = data.train.sampler.queries()
    for _ in range(12):
        x, y, _t = next(queries)
        bounds = (x.start, y.start, x.stop, y.stop)
        sample = data.train.read(bounds)
        chip = shapely.box(*bounds)
        # Training chips keep the buildings at least half inside them.
        overlapping = [p for p in polygons if p.intersection(chip).area >= p.area / 2]
        assert len(sample['boxes']) == len(overlapping)
        assert sample['boxes'].shape[1:] == (4,)
        assert ((sample['boxes'] >= 0) & (sample['boxes'] <= 128)).all()
    batch = collate_labelled(list(data.train))
    assert batch['image'].shape == (8, 1, 128, 128)
    assert len(batch['boxes']) == 8
    assert sum(1 for _ in data.val) > 0


def test_naip_patches_in_a_zip_with_split_folders(shared_data):
    archive = shared_data / 'labelled' / 'classification' / 'naip_patches_6class.zip'

    data = open_labelled('classify', archive)

    assert data.class_table.names == (
        'barren_land',
        'building',
        'grassland',
        'roads',
        'trees',
        'water',
    )
    assert (len(data.train), len(data.val), len(data.test)) == (48, 24, 24)
    assert data.in_chans == 4, 'the 4th band (NIR) is data, though flagged alpha'
    assert Counter(data.train.labels) == dict.fromkeys(range(6), 8)
    sample = data.test[0]
    assert sample['image'].shape == (4, 28, 28)
    assert sample['image'].dtype == torch.float32
    assert 0 <= float(sample['image'].min()) and float(sample['image'].max()) <= 255
    assert data.test.paths[0].startswith(f'/vsizip/{archive}/tst/')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NotGeoreferencedWarning)
        with rasterio.open(data.test.paths[0]) as src:
            stored = src.read()
    np.testing.assert_array_equal(sample['image'].numpy(), stored.astype(np.float32))
    stats = data.statistics(num_samples=16)
    assert len(stats.mean) == 4
    assert all(0 < m < 255 for m in stats.mean)
