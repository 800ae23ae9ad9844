"""Fine-tuned model files: one versioned schema, rebuilt from it, loaded strictly."""

import json

import pytest
import torch
from safetensors import safe_open

from dspt_geo.data.sar import SarConversion
from dspt_geo.data.statistics import BandStatistics
from dspt_geo.errors import CheckpointError
from dspt_geo.models import (
    build_encoder,
    build_task_model,
    load_finetuned,
    save_model_file,
)
from dspt_geo.models.finetuned import SCHEMA_VERSION, FinetunedMetadata, PredictionSpec
from dspt_geo.task import TASKS

TINY = {'depth': 2, 'embed_dim': 32, 'num_heads': 2}
HEADS = {
    'classify': {},
    'segment': {'channels': 16},
    'detect': {'out_channels': 16, 'representation_size': 32},
}


def tiny_model(task: str, in_chans: int = 2, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    encoder, _ = build_encoder(
        'vit_tiny_patch16_224', in_chans, image_size=32, patch_size=8, model_args=TINY
    )
    return build_task_model(task, encoder, classes, **HEADS[task]).eval()


def finetuned_metadata(model: torch.nn.Module, task: str) -> FinetunedMetadata:
    """What ``dspt-geo finetune`` writes for *model*, with made-up training data."""
    bands = ('VV', 'VH') if task == 'detect' else ('red', 'nir')
    return FinetunedMetadata(
        spec=PredictionSpec(
            task=task,  # type: ignore[arg-type]
            class_names=('water', 'field', 'town'),
            class_colours=((0, 0, 255), (0, 200, 0), (200, 0, 0)),
            bands=bands,
            in_chans=2,
            statistics=BandStatistics(
                bands=bands,
                mean=(0.1, -2.5),
                std=(1.0, 3.5),
                p02=(),
                p50=(),
                p98=(),
                pixels=4096,
            ),
            nodata=-9999.0 if task == 'segment' else None,
            sar=SarConversion.from_dict({'sar_scale': 'intensity', 'sar_mode': 'db'})
            if task == 'detect'
            else None,
            tile=32,
            overlap=8,
            score_threshold=0.3,
            sensor='s2' if task != 'detect' else 's1',
            res=(10.0, 10.0) if task != 'classify' else None,
            max_objects=5 if task == 'detect' else None,
            patch_size=8,
        ),
        model_config=model.config(),
        model={'name': 'vit_tiny_patch16_224', 'model_args': TINY, 'image_size': 32},
        class_table={'names': ['water', 'field', 'town']},
        training={'steps': 3, 'best': {'step': 3, 'value': 0.5}},
    )


def write(path, model, metadata):
    save_model_file(path, model.state_dict(), metadata)
    return path


@pytest.mark.parametrize('task', TASKS)
def test_the_schema_round_trips_every_task(task, tmp_path):
    model = tiny_model(task)
    written = finetuned_metadata(model, task)
    path = write(tmp_path / 'model.safetensors', model, written.to_metadata())

    loaded, metadata = load_finetuned(path)

    assert metadata['schema_version'] == SCHEMA_VERSION
    assert metadata['kind'] == 'finetuned' and metadata['task'] == task
    assert metadata['model']['patch_size'] == 8  # the spec's, beside the encoder's
    assert FinetunedMetadata.from_metadata(metadata) == written
    assert PredictionSpec.from_metadata(metadata) == written.spec
    assert type(loaded) is type(model) and not loaded.training


def test_a_finetuned_file_rebuilds_the_model(tmp_path):
    model = tiny_model('segment')
    metadata = finetuned_metadata(model, 'segment').to_metadata()
    path = write(tmp_path / 'model.safetensors', model, metadata)

    loaded, read = load_finetuned(path)

    assert not loaded.training
    assert read['task'] == 'segment'
    images = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))


def test_files_of_another_kind_are_refused(tmp_path):
    model = tiny_model('segment')
    pretrained = tmp_path / 'pretrained.safetensors'
    save_model_file(pretrained, {'w': torch.zeros(1)}, {'kind': 'mae-pretrained'})
    with pytest.raises(
        CheckpointError, match=r'not a fine-tuned model.*pre-trained MAE'
    ):
        load_finetuned(pretrained)

    broken = tmp_path / 'broken.safetensors'
    state = dict(model.state_dict())
    state.pop('decode_head.classifier.weight')
    save_model_file(broken, state, finetuned_metadata(model, 'segment').to_metadata())
    with pytest.raises(CheckpointError, match='do not fit its model configuration'):
        load_finetuned(broken)


@pytest.mark.parametrize(
    ('version', 'message'),
    [
        (
            0,
            r'schema 0, written by an older dspt-geo.*re-train it with dspt-geo >= 0\.1',
        ),
        (SCHEMA_VERSION + 1, rf'schema {SCHEMA_VERSION + 1}; .*update dspt-geo'),
        ('1', r"schema_version is '1', expected an integer"),
    ],
)
def test_a_file_of_another_schema_version_says_what_to_do(version, message, tmp_path):
    model = tiny_model('classify')
    metadata = {**finetuned_metadata(model, 'classify').to_metadata()}
    metadata['schema_version'] = version
    path = write(tmp_path / 'model.safetensors', model, metadata)

    with pytest.raises(CheckpointError, match=message) as error:
        load_finetuned(path)
    assert 'model.safetensors' in str(error.value) or 'schema_version' in str(
        error.value
    )


def test_files_written_before_the_version_key_read_as_schema_1(tmp_path):
    model = tiny_model('classify')
    metadata = finetuned_metadata(model, 'classify').to_metadata()
    del metadata['schema_version']
    path = write(tmp_path / 'model.safetensors', model, metadata)

    _, read = load_finetuned(path)

    assert FinetunedMetadata.from_metadata(read).spec.task == 'classify'


@pytest.mark.parametrize(
    ('change', 'message'),
    [
        (lambda m: m.pop('model_config'), r'model_config is None, expected a Mapping'),
        (lambda m: m.update(task='count'), r"task is 'count', expected one of"),
        (
            lambda m: m['model_config'].update(task='segment'),
            r"model_config.task is 'segment', expected 'classify'",
        ),
        (
            lambda m: m['sensor'].update(in_chans=3),
            r'sensor.bands .*expected 3 band names',
        ),
        (
            lambda m: m['sensor']['statistics'].update(std=[1.0, 'x']),
            r'sensor.statistics.std .*2 finite numbers',
        ),
        (lambda m: m.update(training=[1]), r'training is \[1\], expected an object'),
    ],
)
def test_malformed_metadata_names_the_key(change, message, tmp_path):
    model = tiny_model('classify')
    metadata = finetuned_metadata(model, 'classify').to_metadata()
    change(metadata)
    path = write(tmp_path / 'model.safetensors', model, metadata)

    with pytest.raises(CheckpointError, match=message):
        load_finetuned(path)


def test_the_stored_json_is_the_schema(tmp_path):
    model = tiny_model('detect')
    written = finetuned_metadata(model, 'detect')
    path = write(tmp_path / 'model.safetensors', model, written.to_metadata())

    with safe_open(str(path), framework='pt') as file:
        stored = json.loads(file.metadata()['dspt_geo'])

    assert stored['sensor']['sar_mode'] == 'db'
    assert stored['classes'][2] == {'name': 'town', 'colour': [200, 0, 0]}
    assert stored['max_objects'] == 5 and stored['tile'] == {'size': 32, 'overlap': 8}
