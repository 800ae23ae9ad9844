"""One group per band layout: image chips and GeoTIFFs of the same bands together."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from dspt_geo_cli.main import cli
from PIL import Image

from dspt_geo.data import (
    ChipDataset,
    ChipGroup,
    MixedDataset,
    MixedStream,
    SensorDataset,
    SensorGroup,
    discover_groups,
)
from dspt_geo.data.batches import SensorBatchStream, group_dataset
from dspt_geo.data.statistics import compute_statistics, load_or_compute_statistics
from dspt_geo.data.summary import describe_rasters, format_description


@pytest.fixture
def folder(tmp_path, raster_writer, rng):
    """RGB JPEG and PNG chips (dark) beside RGB GeoTIFFs in two CRSs (bright),
    and a 4-band uint16 GeoTIFF."""
    chips = tmp_path / 'chips'
    for i in range(4):
        (chips / 'a').mkdir(parents=True, exist_ok=True)
        data = rng.integers(0, 60, (32, 40, 3), dtype=np.uint8)
        Image.fromarray(data).save(chips / 'a' / f'c{i}.jpg', quality=95)
        Image.fromarray(data[:, :32]).save(chips / f'p{i}.png')
    raster_writer('scenes/utm.tif', rng.integers(200, 255, (3, 80, 80), dtype=np.uint8))
    raster_writer(
        'scenes/wgs84.tif',
        rng.integers(200, 255, (3, 40, 40), dtype=np.uint8),
        crs='EPSG:4326',
        origin=(10.0, 50.0),
        res=0.0001,
    )
    raster_writer('nir.tif', rng.integers(1, 4000, (4, 64, 64), dtype=np.uint16))
    return tmp_path


def test_chips_and_rasters_of_one_layout_form_one_group(folder):
    groups = {g.name: g for g in discover_groups([folder])}

    assert set(groups) == {'3band-uint8', '4band-uint16'}
    rgb = groups['3band-uint8']
    assert isinstance(rgb, SensorGroup)
    assert len(rgb.rasters) == 2 and len(rgb.chips) == 8
    assert {c.driver for c in rgb.chips} == {'JPEG', 'PNG'}
    assert rgb.pixels == rgb.raster_pixels + rgb.chip_pixels
    assert set(rgb.paths) == {
        *(p for r in rgb.rasters for p in r.paths),
        *(c.path for c in rgb.chips),
    }
    assert groups['4band-uint16'].chips == ()
    assert not any(isinstance(g, ChipGroup) for g in groups.values())
    assert isinstance(group_dataset(rgb), MixedDataset)
    assert isinstance(group_dataset(groups['4band-uint16']), SensorDataset)


def test_mixed_stream_draws_from_both_by_pixel_share(folder):
    (rgb,) = (g for g in discover_groups([folder]) if g.name == '3band-uint8')
    dataset = MixedDataset(rgb)
    stream = MixedStream(dataset, size=24, length=200, seed=1)

    samples = list(stream)

    assert len(samples) == len(stream) == 200
    assert all(s['image'].shape == (3, 24, 24) for s in samples)
    # Chips are dark (< 60 before JPEG noise), rasters bright (>= 200).
    from_chips = sum(float(s['image'].mean()) < 128 for s in samples)
    assert abs(from_chips / 200 - dataset.chip_share) < 0.1
    assert 0.1 < dataset.chip_share < 0.9
    again = list(MixedStream(dataset, size=24, length=200, seed=1))
    assert all(torch.equal(a['image'], b['image']) for a, b in zip(samples, again))


def test_statistics_cover_chips_and_rasters(folder):
    (rgb,) = (g for g in discover_groups([folder]) if g.name == '3band-uint8')
    dataset = MixedDataset(rgb)

    mixed = compute_statistics(dataset, num_patches=16, size=32)
    rasters = compute_statistics(SensorDataset(rgb), num_patches=16, size=32)
    chips = compute_statistics(ChipDataset(rgb), num_patches=8)

    # The mean lies between the dark chips' and the bright rasters'.
    for band in range(3):
        assert chips.mean[band] < mixed.mean[band] < rasters.mean[band]
    assert mixed.p02[0] < 80 and mixed.p98[0] > 190


def test_batches_and_the_cache_take_the_mixed_group(folder, tmp_path):
    datasets = {g.name: group_dataset(g) for g in discover_groups([folder])}
    stream = SensorBatchStream(datasets, size=24, batch_size=4, batches=6, seed=0)
    for batch in stream:
        bands = datasets[batch['sensor']].group.count
        assert batch['image'].shape == (4, bands, 24, 24)

    first = load_or_compute_statistics(datasets['3band-uint8'], tmp_path / 'cache')
    again = load_or_compute_statistics(datasets['3band-uint8'], tmp_path / 'cache')
    assert first == again
    assert len(list((tmp_path / 'cache').glob('stats-3band-uint8-*.json'))) == 1


def test_info_shows_the_chips_in_their_layouts_group(folder):
    description = describe_rasters([folder], stats=True)

    assert description['chip_groups'] == []
    rgb = next(g for g in description['groups'] if g['name'] == '3band-uint8')
    assert rgb['chips']['chips'] == 8
    assert rgb['chips']['formats'] == ['JPEG', 'PNG']
    assert rgb['chips']['size_min'] == [32, 32] and rgb['chips']['size_max'] == [40, 32]
    assert len(rgb['files']) == 2
    assert rgb['statistics']['p02'][0] < 80
    assert rgb['statistics']['p98'][0] > 190
    nir = next(g for g in description['groups'] if g['name'] == '4band-uint16')
    assert nir['chips'] is None

    text = format_description(description)
    assert text.splitlines()[0] == (
        '2 sensor group(s), 3 raster(s); 8 image chip(s) in sensor groups of their '
        'band layout'
    )
    assert 'image chips of this band layout, each a sample of its own:' in text
    assert '32 x 32 to 40 x 32 px' in text

    result = CliRunner().invoke(cli, ['info', str(folder), '--json'])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert [g['name'] for g in shown['groups']] == ['3band-uint8', '4band-uint16']
    assert shown['groups'][0]['chips']['chips'] == 8
