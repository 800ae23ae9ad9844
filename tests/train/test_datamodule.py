"""The pre-training DataModule: larger windows in, views with valid masks out."""

import pytest
import torch

from dspt_geo.data import discover_groups
from dspt_geo.errors import ConfigError
from dspt_geo.train.datamodule import PretrainDataModule


def test_views_are_cut_from_larger_windows_and_ignore_the_nodata_fill(
    sample_data, tmp_path
):
    groups = discover_groups([sample_data])
    datamodule = PretrainDataModule(
        groups,
        image_size=32,
        batch_size=4,
        batches_per_epoch=8,
        stats_dir=tmp_path / 'stats',
        num_workers=0,
    )
    assert datamodule.window == 72  # ceil(32 / sqrt(0.2))
    datamodule.prepare_data()
    datamodule.setup('fit')

    windows, nodata_seen = {}, False
    for batch in datamodule.train_dataloader():
        bands = datamodule.datasets[batch['sensor']].group.count
        windows[batch['sensor']] = tuple(batch['image'].shape[-2:])
        nodata_seen |= bool((~batch['valid']).any())
        torch.manual_seed(0)
        views = datamodule.on_after_batch_transfer(batch, 0)
        refilled = torch.where(batch['valid'][:, None], batch['image'], 12345.0)
        torch.manual_seed(0)
        again = datamodule.on_after_batch_transfer({**batch, 'image': refilled}, 0)

        assert views['image'].shape == (4, bands, 32, 32)
        assert (
            views['valid'].shape == (4, 32, 32) and views['valid'].dtype == torch.bool
        )
        assert torch.equal(views['image'], again['image'])
        assert torch.equal(views['valid'], again['valid'])
    # Optical (128 px): 72 px windows; SAR (64 px at 20 m): the whole raster.
    assert sorted(windows.values()) == [(64, 64), (72, 72)]
    assert nodata_seen


@pytest.mark.parametrize('crop_scale', [(0.0, 1.0), (0.5, 0.2), (0.2, 1.5)])
def test_crop_scale_outside_area_shares_is_a_config_error(
    sample_data, tmp_path, crop_scale
):
    with pytest.raises(ConfigError, match='crop_scale'):
        PretrainDataModule(
            discover_groups([sample_data]),
            image_size=32,
            batch_size=4,
            batches_per_epoch=1,
            stats_dir=tmp_path,
            crop_scale=crop_scale,
        )
