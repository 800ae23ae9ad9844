"""Run configurations read from plain data: types checked per key (issue 10, point 5)."""

import pytest

from dspt_geo.errors import ConfigError
from dspt_geo.train import FinetuneConfig, PretrainConfig


def test_values_are_read_as_their_fields_types():
    config = PretrainConfig.from_dict({
        'paths': 'scenes',  # one path: a one-item list
        'out': 'run',
        'lr': 1,  # YAML's 1 is a number
        'crop_scale': [0.3, 1],  # YAML has no tuples
        'devices': '2',
        'sar_mode': 'db',
    })  # fmt: skip
    assert config.paths == ['scenes']
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.crop_scale == (0.3, 1.0)
    assert config.devices == 2


@pytest.mark.parametrize(
    ('key', 'value', 'message'),
    [
        ('sar_mode', 'decibel', "'sar_mode' must be one of 'auto', 'db'"),
        ('epochs', 2.5, "'epochs' must be an integer or null, got 2.5"),
        ('model_args', ['depth=2'], "'model_args' must be a mapping"),
        ('paths', [1, 2], "'paths' must be a list of text, got [1, 2]"),
        ('devices', [0, 1], "'devices' must be text or an integer"),
    ],
)
def test_a_wrong_type_names_the_key(key, value, message):
    with pytest.raises(ConfigError, match='configuration key ') as error:
        PretrainConfig.from_dict({'paths': ['scenes'], 'out': 'run', key: value})
    assert message in str(error.value)


def test_the_task_is_one_of_three():
    data = {'task': 'regress', 'images': ['chips'], 'out': 'run'}
    with pytest.raises(ConfigError, match="'task' must be one of 'classify'"):
        FinetuneConfig.from_dict(data)
    config = FinetuneConfig.from_dict({**data, 'task': 'segment', 'model_args': None})
    assert config.task == 'segment' and config.model_args is None


def test_a_saved_configuration_reads_back_the_same(tmp_path):
    config = FinetuneConfig.from_dict({
        'task': 'detect', 'images': ['a.tif'], 'labels': ['b.gpkg'], 'out': 'run',
        'head_args': {'box_head': '2fc'}, 'lr': 0.01, 'devices': 'auto',
    })  # fmt: skip
    config.save(tmp_path / 'config.yaml')
    again = FinetuneConfig.from_dict(FinetuneConfig.read_yaml(tmp_path / 'config.yaml'))
    assert again == config
