"""What fine-tuning takes over from the pre-trained file: SAR conversion, statistics."""

from types import SimpleNamespace

import numpy as np
import torch

from dspt_geo.data import SarConversion
from dspt_geo.data.labels import open_labelled
from dspt_geo.models import save_model_file
from dspt_geo.train.finetune_run import _describe_data, _pretrained_sensor


def _sar_scene(raster_writer, rng):
    power = (10 ** rng.uniform(-2, -0.5, (1, 32, 32))).astype(np.float32)
    image = raster_writer('img/scene_VV.tif', power)
    labels = raster_writer('lab/a.tif', rng.integers(0, 2, (32, 32), dtype=np.uint8))
    data = open_labelled('segment', image, labels, split=None, size=32, length=1)
    return power, data


def test_images_are_read_and_normalised_as_in_pretraining(raster_writer, rng, tmp_path):
    power, data = _sar_scene(raster_writer, rng)
    assert data.images.sar == SarConversion('intensity', 'db')  # this data's own rule
    name, bands = data.images.group.name, list(data.bands)
    stored = {
        'bands': bands, 'mean': [0.25], 'std': [0.125], 'p02': [0.0], 'p50': [0.2],
        'p98': [0.6], 'pixels': 99,
    }  # fmt: skip
    init = tmp_path / 'pretrained.safetensors'
    sensors = {
        'optical': {'bands': ['red', 'green', 'blue'], 'statistics': {}},
        name: {
            'bands': bands, 'sar_scale': 'intensity', 'sar_mode': 'amplitude',
            'statistics': stored,
        },
    }  # fmt: skip
    save_model_file(init, {'x': torch.zeros(1)}, {'sensors': sensors})

    entry = _pretrained_sensor(str(init), data)

    assert entry is not None and entry['name'] == name
    # Pre-training read this group as amplitude: fine-tuning does too.
    assert data.images.sar == SarConversion('intensity', 'amplitude')
    image = next(iter(data.train))['image'].numpy()
    np.testing.assert_allclose(image, np.sqrt(power), rtol=1e-5)

    config = SimpleNamespace(
        init=str(init),
        recompute_stats=False,
        seed=0,
        task='segment',
        class_weights='none',
    )
    statistics, _ = _describe_data(config, data, entry)
    assert statistics.to_dict() == stored
    config.recompute_stats = True
    statistics, _ = _describe_data(config, data, entry)
    np.testing.assert_allclose(statistics.mean, [np.sqrt(power).mean()], rtol=1e-3)


def test_no_matching_group_keeps_the_data_own_rules(raster_writer, rng, tmp_path):
    _, data = _sar_scene(raster_writer, rng)
    init = tmp_path / 'pretrained.safetensors'
    sensors = {'optical': {'bands': ['red', 'green', 'blue'], 'statistics': {}}}
    save_model_file(init, {'x': torch.zeros(1)}, {'sensors': sensors})

    assert _pretrained_sensor(str(init), data) is None
    assert data.images.sar == SarConversion('intensity', 'db')
    assert _pretrained_sensor('none', data) is None
