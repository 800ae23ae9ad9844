import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchgeo.datasets import stack_samples

from dspt_geo.data import SensorDataset, group_rasters, sampling, scan_rasters
from dspt_geo.data.batches import SensorBatchStream
from dspt_geo.data.sampling import (
    DistributedGridGeoSampler,
    DistributedRandomGeoSampler,
    PatchStream,
)
from dspt_geo.errors import EmptyRasterError, IncompatibleRasterError


def _dataset(path):
    (group,) = group_rasters(scan_rasters([path]).rasters)
    return SensorDataset(group)


@pytest.fixture
def half_nodata(raster_writer, rng):
    """A 128 x 128 raster whose left 70 % columns are nodata."""
    data = rng.integers(1, 1000, (2, 128, 128), dtype=np.uint16)
    data[:, :, :90] = 0
    return _dataset(raster_writer('half.tif', data, nodata=0))


def _corner(sample):
    return (float(sample['bounds'][0].start), float(sample['bounds'][1].start))


def test_stream_serves_only_patches_with_enough_valid_pixels(half_nodata):
    stream = PatchStream(half_nodata, size=32, length=40, min_valid_fraction=0.5)

    samples = list(stream)

    assert len(samples) == 40
    fractions = [
        half_nodata.valid_mask(s['image']).float().mean().item() for s in samples
    ]
    assert min(fractions) >= 0.5
    assert all(s['image'].shape == (2, 32, 32) for s in samples)


def test_workers_draw_different_patches(half_nodata):
    stream = PatchStream(half_nodata, size=16, length=32, min_valid_fraction=0.0)
    loader = DataLoader(stream, batch_size=4, num_workers=2, collate_fn=stack_samples)

    corners = [
        (float(b[0].start), float(b[1].start))
        for batch in loader
        for b in batch['bounds']
    ]

    assert len(corners) == 32
    assert len(set(corners)) > 24, 'two workers with one seed would repeat every patch'


def test_ranks_draw_different_patches_and_share_the_epoch(half_nodata, monkeypatch):
    def run_as(rank):
        monkeypatch.setattr(sampling, 'process_shard', lambda: (rank, 2))
        return [
            _corner(s)
            for s in PatchStream(
                half_nodata, size=16, length=21, min_valid_fraction=0.0, seed=3
            )
        ]

    rank0, rank1 = run_as(0), run_as(1)

    assert (len(rank0), len(rank1)) == (11, 10)
    assert len(set(rank0) & set(rank1)) < 3


def test_same_seed_same_patches_and_epochs_differ(half_nodata):
    def corners(epoch, seed=0):
        stream = PatchStream(
            half_nodata, size=16, length=8, min_valid_fraction=0.0, seed=seed
        )
        stream.set_epoch(epoch)
        return [_corner(s) for s in stream]

    assert corners(0) == corners(0)
    assert corners(0) != corners(1)
    assert corners(0) != corners(0, seed=1)


def test_grid_is_dealt_out_exactly_once(half_nodata, monkeypatch):
    full = list(DistributedGridGeoSampler(half_nodata, 32, 24))
    shards = []
    for rank in range(3):
        monkeypatch.setattr(sampling, 'process_shard', lambda rank=rank: (rank, 3))
        sampler = DistributedGridGeoSampler(half_nodata, 32, 24)
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1])

    assert sorted(str(q) for shard in shards for q in shard) == sorted(map(str, full))
    assert len(full) == 25  # ceil((128 - 32) / 24) + 1 = 5 rows and columns


def test_patch_larger_than_every_raster_is_a_clear_error(half_nodata):
    with pytest.raises(IncompatibleRasterError, match='larger than every raster'):
        DistributedRandomGeoSampler(half_nodata, 256, 10)


def test_data_that_is_nodata_everywhere_stops_the_stream(raster_writer):
    data = np.zeros((1, 5000, 4000), np.uint8)
    data[0, 0, 0] = 1  # one valid pixel: not caught by the scan's cheap check
    dataset = _dataset(raster_writer('empty.tif', data, nodata=0, tiled=True))

    with pytest.raises(EmptyRasterError, match='nodata almost everywhere'):
        list(PatchStream(dataset, size=32, length=4, max_rejections=20))


def test_default_rng_state_is_untouched(half_nodata):
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    list(PatchStream(half_nodata, size=16, length=4, min_valid_fraction=0.0))
    assert torch.rand(1) == expected


@pytest.fixture
def two_sizes(raster_writer, rng, tmp_path):
    """One group: a 128 x 128 raster, a 48 x 40 one and a 24 x 24 one."""
    for name, (h, w), x in [
        ('big', (128, 128), 0),
        ('small', (48, 40), 1),
        ('tiny', (24, 24), 2),
    ]:
        data = rng.integers(1, 1000, (2, h, w), dtype=np.uint16)
        raster_writer(f'tiles/{name}.tif', data, origin=(500_000.0 + 10_000 * x, 5e6))
    return _dataset(tmp_path / 'tiles')


def test_windows_are_larger_than_the_patch_and_capped_by_each_file(two_sizes):
    stream = PatchStream(
        two_sizes, size=32, length=60, min_valid_fraction=0.0, window=72
    )

    samples = list(stream)

    shapes = [tuple(s['image'].shape) for s in samples]
    # The big file gives 72 px windows, the small one its shorter side, the tiny
    # one (under the 32 px patch) nothing.
    assert set(shapes) == {(2, 72, 72), (2, 40, 40)}
    assert all(s['valid'].shape == s['image'].shape[1:] for s in samples)
    assert shapes.count((2, 72, 72)) > shapes.count((2, 40, 40))


def test_batches_of_mixed_windows_are_lists(two_sizes):
    stream = SensorBatchStream(
        {'g': two_sizes}, size=32, batch_size=8, batches=8, window=72
    )

    batches = list(stream)

    kinds = {type(b['image']) for b in batches}
    assert kinds == {torch.Tensor, list}
    for batch in batches:
        if isinstance(batch['image'], torch.Tensor):
            assert batch['image'].shape == (8, 2, 72, 72)
            assert batch['valid'].shape == (8, 72, 72)
        else:
            assert len(batch['image']) == len(batch['valid']) == 8
            assert {tuple(x.shape) for x in batch['image']} == {
                (2, 72, 72),
                (2, 40, 40),
            }
