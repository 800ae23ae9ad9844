"""Image chips (no georeferencing): discovery, groups, the dataset, the stream, stats."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dspt_geo.data import (
    ChipDataset,
    ChipGroup,
    ChipStream,
    discover_groups,
    scan_rasters,
)
from dspt_geo.data.batches import SensorBatchStream, group_dataset
from dspt_geo.data.statistics import compute_statistics
from dspt_geo.errors import NoRastersFoundError


def write_image(path: Path, data: np.ndarray) -> Path:
    """Write (rows, cols[, bands]) uint8 *data* with Pillow (JPEG by quality 95)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data).save(path, quality=95)
    return path


@pytest.fixture
def mixed(tmp_path, raster_writer, rng) -> Path:
    """A folder of JPEG and PNG RGB chips in class folders, an RGBA PNG, TIFF
    chips without CRS (4-band uint16, one smaller than the others) and a GeoTIFF."""
    for i in range(3):
        write_image(
            tmp_path / 'forest' / f'f{i}.jpg',
            rng.integers(0, 255, (40, 48, 3), dtype=np.uint8),
        )
        write_image(
            tmp_path / 'river' / f'r{i}.png',
            rng.integers(0, 255, (40, 40, 3), dtype=np.uint8),
        )
    rgba = rng.integers(1, 255, (40, 40, 4), dtype=np.uint8)
    rgba[:, :20, 3] = 0  # left half transparent
    write_image(tmp_path / 'river' / 'alpha.png', rgba)
    for i, side in enumerate((64, 64, 20)):
        raster_writer(
            f'ms/c{i}.tif',
            rng.integers(1, 4000, (4, side, side), dtype=np.uint16),
            crs=None,
        )
    raster_writer('scene.tif', rng.integers(1, 255, (3, 96, 96), dtype=np.uint8))
    return tmp_path


def test_chips_are_found_beside_rasters_and_grouped_by_band_layout(mixed):
    scan = scan_rasters([mixed], chips=True)

    assert [Path(r.path).name for r in scan.rasters] == ['scene.tif']
    assert len(scan.chips) == 10
    assert scan.skipped == []
    alpha = next(c for c in scan.chips if c.path.endswith('alpha.png'))
    assert (alpha.count, alpha.alpha) == (3, True)

    groups = {g.name: g for g in discover_groups([mixed])}
    # The RGB chips join the RGB GeoTIFF's group: one group per band layout.
    assert set(groups) == {'3band-uint8', '4band-uint16'}
    assert isinstance(groups['4band-uint16'], ChipGroup)
    assert len(groups['3band-uint8'].chips) == 7
    assert len(groups['4band-uint16'].chips) == 3


def test_without_chips_they_are_skipped_with_a_hint_that_fits_the_format(mixed, caplog):
    with caplog.at_level(logging.WARNING):
        scan = scan_rasters([mixed])

    reasons = {Path(s.path).suffix: s.reason for s in scan.skipped}
    assert 'gdal_edit.py -a_srs' in reasons['.tif']
    for suffix in ('.jpg', '.png'):
        assert 'gdal_edit.py' not in reasons[suffix]
        assert 'gdal_translate -a_srs' in reasons[suffix]
    # One warning per reason, not per file.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len({s.reason for s in scan.skipped}) == 3
    assert '4 files' in caplog.text  # the PNGs
    assert 'and 1 more (-v lists all)' in caplog.text


def test_skipped_files_are_named_as_the_user_typed_them(
    tmp_path, raster_writer, caplog, monkeypatch
):
    real = tmp_path / 'real'
    raster_writer('real/good.tif', np.ones((1, 8, 8), np.uint8))
    (real / 'bad.tif').write_bytes(b'II*\x00' + bytes(range(256)))
    (tmp_path / 'link').symlink_to(real)
    monkeypatch.chdir(tmp_path)

    with caplog.at_level(logging.INFO):
        scan = scan_rasters(['link'])

    assert [s.path for s in scan.skipped] == ['link/bad.tif']
    assert 'link/bad.tif' in caplog.text and 'real/bad.tif' not in caplog.text
    # -v (info) names the file with GDAL's own message.
    assert any('skipped link/bad.tif' in r.getMessage() for r in caplog.records)


def test_nothing_usable_names_chips_when_they_are_accepted(tmp_path):
    (tmp_path / 'notes.md').write_text('x')
    with pytest.raises(NoRastersFoundError, match='raster or image chip'):
        scan_rasters([tmp_path], chips=True)


def test_dataset_decodes_every_format_like_gdal(mixed):
    import rasterio

    for group in discover_groups([mixed]):
        dataset = ChipDataset(group)
        for index, chip in enumerate(group.chips):
            sample = dataset[index]
            if chip.driver == 'JPEG':
                # Lossy: decoders differ in chroma upsampling; chips decode as
                # Pillow does (the faster one).
                expected = np.asarray(Image.open(chip.path)).transpose(2, 0, 1)
            else:
                with rasterio.open(chip.path) as src:
                    expected = src.read()[: chip.count]
            assert sample['image'].dtype == torch.float32
            np.testing.assert_array_equal(sample['image'].numpy(), expected)
            assert sample['image'].shape == (group.count, chip.height, chip.width)
            if chip.alpha:
                assert not sample['valid'][:, :20].any()
                assert sample['valid'][:, 20:].all()
            else:
                assert sample['valid'].all()


def test_dataset_reads_windows_of_a_chip(mixed):
    group = next(g for g in discover_groups([mixed]) if g.name == '4band-uint16')
    dataset = ChipDataset(group)
    whole = dataset[0]['image']
    window = dataset.read(0, (5, 7, 16, 16))['image']
    assert torch.equal(window, whole[:, 5:21, 7:23])


def test_nodata_chips_mark_their_fill_invalid(tmp_path, raster_writer):
    data = np.full((2, 16, 16), 7, np.int16)
    data[:, :4] = -1
    raster_writer('c.tif', data, crs=None, nodata=-1)
    (group,) = discover_groups([tmp_path])
    sample = ChipDataset(group)[0]
    assert group.nodata == -1
    assert not sample['valid'][:4].any() and sample['valid'][4:].all()


def test_stream_windows_big_chips_enlarges_small_ones_and_shards(mixed, monkeypatch):
    group = next(g for g in discover_groups([mixed]) if g.name == '4band-uint16')
    dataset = ChipDataset(group)
    stream = ChipStream(dataset, size=32, length=12, seed=3)

    samples = list(stream)

    assert len(samples) == 12
    assert all(s['image'].shape == (4, 32, 32) for s in samples)
    # The 20 px chip is enlarged to 32 px (bilinear: values stay in its range).
    small = dataset[2]['image']
    enlarged = [
        s['image']
        for s in samples
        if s['image'].min() >= small.min() and s['image'].max() <= small.max()
    ]
    assert enlarged, 'the small chip was never drawn'
    # Reproducible per seed and epoch, different across epochs.
    again = list(ChipStream(dataset, size=32, length=12, seed=3))
    assert all(torch.equal(a['image'], b['image']) for a, b in zip(samples, again))
    stream.set_epoch(1)
    assert not all(
        torch.equal(a['image'], b['image']) for a, b in zip(samples, list(stream))
    )

    # Two shards split the chips of a pass between them.
    def chips_of(shard: int) -> list[tuple[float, ...]]:
        monkeypatch.setattr('dspt_geo.data.chips.process_shard', lambda: (shard, 2))
        stream = ChipStream(dataset, size=None, length=2, seed=0)
        return [(*s['image'].shape, float(s['image'].sum())) for s in stream]

    first, second = chips_of(0), chips_of(1)
    assert len(first) == len(second) == 1
    assert not set(first) & set(second)


def test_whole_chip_stream_and_statistics(mixed):
    group = next(g for g in discover_groups([mixed]) if g.name == '3band-uint8')
    dataset = ChipDataset(group)  # the group's chips, without its GeoTIFF
    shapes = {tuple(s['image'].shape) for s in ChipStream(dataset, None, 7)}
    assert shapes == {(3, 40, 48), (3, 40, 40)}

    stats = compute_statistics(dataset, num_patches=7)

    pixels = torch.cat([
        dataset[i]['image'][:, dataset[i]['valid']] for i in range(len(dataset))
    ], dim=1).double()  # fmt: skip
    assert stats.bands == ('band_1', 'band_2', 'band_3')
    assert stats.pixels == pixels.shape[1]
    np.testing.assert_allclose(stats.mean, pixels.mean(dim=1).numpy(), rtol=1e-6)


def test_batches_mix_chip_and_raster_groups(mixed):
    datasets = {g.name: group_dataset(g) for g in discover_groups([mixed])}
    stream = SensorBatchStream(datasets, size=32, batch_size=4, batches=12, seed=0)

    batches = list(stream)

    assert len(batches) == 12
    assert {b['sensor'] for b in batches} == set(datasets)
    for batch in batches:
        bands = datasets[batch['sensor']].group.count
        assert batch['image'].shape == (4, bands, 32, 32)
        assert batch['valid'].shape == (4, 32, 32)


def test_stream_reads_larger_windows_for_maes_crops(mixed):
    """With a window (MAE's crops), chips give windows up to it, capped by the chip."""
    group = next(g for g in discover_groups([mixed]) if g.name == '4band-uint16')
    dataset = ChipDataset(group)
    sides = {
        tuple(s['image'].shape[1:])
        for s in ChipStream(dataset, size=16, length=30, seed=0, window=48)
    }
    # 64 px chips give 48 px windows; the 20 px chip is read whole (20 px).
    assert sides == {(48, 48), (20, 20)}
    sides = {
        tuple(s['image'].shape[1:])
        for s in ChipStream(dataset, size=32, length=30, seed=0, window=96)
    }
    # Chips shorter than the window are read whole; the small one is enlarged.
    assert sides == {(64, 64), (32, 32)}
