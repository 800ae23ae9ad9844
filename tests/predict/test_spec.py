from typing import Any

import pytest

from dspt_geo.errors import CheckpointError
from dspt_geo.predict import PredictionSpec
from dspt_geo.predict.spec import DEFAULT_PALETTE


def test_from_metadata_reads_the_schema(metadata: dict[str, Any]) -> None:
    spec = PredictionSpec.from_metadata(metadata)

    assert spec.task == 'segment'
    assert spec.class_names == ('water', 'forest', 'urban')
    assert spec.class_colours[1] == (51, 160, 44)
    assert spec.bands == ('red', 'green', 'blue') and spec.in_chans == 3
    assert spec.statistics.mean == (100.0,) * 3 and spec.statistics.std == (50.0,) * 3
    assert spec.nodata == 0.0 and spec.sar is None
    assert (spec.tile, spec.overlap, spec.score_threshold) == (64, 16, 0.5)
    assert spec.num_classes == 3 and spec.res is None


def test_round_trip_and_optional_keys(metadata: dict[str, Any]) -> None:
    del metadata['classes'][2]['colour']
    metadata['score_threshold'] = None
    metadata['sensor']['statistics'] = {'mean': [1, 2, 3], 'std': [1, 1, 1]}
    metadata['sensor']['res'] = 10
    metadata['format_version'] = 1  # other keys are ignored

    spec = PredictionSpec.from_metadata(metadata)

    assert spec.class_colours[2] == DEFAULT_PALETTE[2]
    assert spec.score_threshold == 0.5 and spec.res == (10.0, 10.0)
    assert PredictionSpec.from_metadata(spec.to_metadata()) == spec


@pytest.mark.parametrize(
    ('change', 'match'),
    [
        ({'task': 'regress'}, r'task is .regress.'),
        ({'classes': []}, 'classes is'),
        ({'classes': [{'name': 'a'}, {'name': 'a'}]}, 'unique class names'),
        ({'classes': [{'name': 'a', 'colour': [0, 0, 300]}]}, r'classes\[0\]\.colour'),
        ({'tile': {'size': 64, 'overlap': 64}}, 'overlap < size'),
        ({'tile': {'size': 64}}, r'tile\.overlap .*missing'),
        ({'score_threshold': 2}, 'score_threshold'),
        ({'sensor': None}, 'sensor'),
    ],
)
def test_invalid_metadata_names_the_key(
    metadata: dict[str, Any], change: dict[str, Any], match: str
) -> None:
    with pytest.raises(CheckpointError, match=match):
        PredictionSpec.from_metadata({**metadata, **change})


@pytest.mark.parametrize(
    ('sensor_change', 'match'),
    [
        ({'in_chans': 4}, r'sensor\.bands'),
        ({'statistics': {'mean': [1, 2], 'std': [1, 1, 1]}}, r'statistics\.mean'),
        ({'sar_mode': 'phase'}, r'sensor\.sar_mode'),
        ({'sar_mode': 'db', 'sar_scale': 'linear'}, r"unknown SAR scale 'linear'"),
        ({'nodata': 'none'}, r'sensor\.nodata'),
    ],
)
def test_invalid_sensor_is_refused(
    metadata: dict[str, Any], sensor_change: dict[str, Any], match: str
) -> None:
    metadata['sensor'].update(sensor_change)
    with pytest.raises(CheckpointError, match=match):
        PredictionSpec.from_metadata(metadata)
