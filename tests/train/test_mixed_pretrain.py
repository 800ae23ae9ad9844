"""Pre-training on GeoTIFFs and image chips of one band layout: one sensor, one stem."""

import math
import shutil

import numpy as np

from dspt_geo.models import load_model_file

OPTICAL = '4band-uint16-blue-green-red-nir'


def test_chips_beside_rasters_of_their_layout_train_one_sensor(
    sample_data, tmp_path, pretrain_cli, tiny_model, read_metrics, rng, raster_writer
):
    data = tmp_path / 'data'
    shutil.copytree(sample_data / 'optical', data / 'scenes')
    for i in range(6):
        raster_writer(
            f'data/chips/c{i}.tif',
            rng.integers(1, 3000, (4, 40, 40), dtype=np.uint16),
            crs=None,
            descriptions=['blue', 'green', 'red', 'nir'],
        )
    run = tmp_path / 'run'

    result = pretrain_cli(data, '--out', run, *tiny_model, '--steps', 6)

    assert result.exit_code == 0, result.output
    assert {row['sensor'] for row in read_metrics(run)} == {OPTICAL}
    state, metadata = load_model_file(run / 'pretrained.safetensors')
    assert list(metadata['sensors']) == [OPTICAL]
    sensor = metadata['sensors'][OPTICAL]
    assert sensor['crs'] is not None
    assert all(math.isfinite(m) for m in sensor['statistics']['mean'])
    assert {k for k in state if k.startswith('patch_embed.')} == {
        f'patch_embed.{OPTICAL}.proj.weight',
        f'patch_embed.{OPTICAL}.proj.bias',
    }
