import errno
import json
import os
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dspt_geo.errors import CheckpointError
from dspt_geo.models import FORMAT_VERSION, load_model_file, save_model_file

METADATA = {
    'model': 'vit_tiny_patch16_224',
    'sensors': {'opt': {'in_chans': 4, 'bands': ['red', 'nir']}},
}


def test_round_trip(tmp_path: Path) -> None:
    tied = torch.randn(4, 6)
    state = {
        'a': torch.randn(3, 5),
        'tied': tied,
        'tied_again': tied,  # shared storage, refused by plain safetensors
        'row': tied[1],
        'transposed': torch.randn(5, 2).t(),
        'int': torch.arange(7),
        'half': torch.randn(2, dtype=torch.float16),
    }
    path = tmp_path / 'model.safetensors'
    save_model_file(path, state, METADATA)
    tensors, metadata = load_model_file(path)
    assert tensors.keys() == state.keys()
    for key, value in state.items():
        assert tensors[key].dtype == value.dtype
        assert torch.equal(tensors[key], value), key
    assert metadata == {**METADATA, 'format_version': FORMAT_VERSION}
    assert os.listdir(tmp_path) == ['model.safetensors']
    # The file gets the mode of any new file, not a private temporary file's.
    (tmp_path / 'plain').touch()
    assert path.stat().st_mode == (tmp_path / 'plain').stat().st_mode


@pytest.mark.parametrize('step', ['fsync', 'replace'])
def test_failed_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    path = tmp_path / 'model.safetensors'
    save_model_file(path, {'w': torch.ones(3)}, {'run': 1})

    def disk_full(*args: object) -> None:
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(os, step, disk_full)
    with pytest.raises(OSError, match='No space left'):
        save_model_file(path, {'w': torch.zeros(1000)}, {'run': 2})
    monkeypatch.undo()
    tensors, metadata = load_model_file(path)
    assert torch.equal(tensors['w'], torch.ones(3))
    assert metadata['run'] == 1
    assert os.listdir(tmp_path) == ['model.safetensors']


def test_metadata_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        save_model_file(
            tmp_path / 'm.safetensors', {'w': torch.ones(1)}, {'bad': object()}
        )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('damage', ['truncate', 'random', 'empty', 'text'])
def test_corrupt_file(tmp_path: Path, damage: str) -> None:
    path = tmp_path / 'model.safetensors'
    save_model_file(path, {'w': torch.randn(64, 64)}, METADATA)
    data = path.read_bytes()
    match damage:
        case 'truncate':
            path.write_bytes(data[: len(data) // 2])
        case 'random':
            path.write_bytes(random.Random(0).randbytes(len(data)))
        case 'empty':
            path.write_bytes(b'')
        case 'text':
            path.write_text('not a model\n')
    with pytest.raises(
        CheckpointError, match=r'model\.safetensors is not a readable model file'
    ):
        load_model_file(path)


def test_not_a_dspt_geo_file(tmp_path: Path) -> None:
    path = tmp_path / 'plain.safetensors'
    save_file({'w': torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match='not a dspt-geo model file'):
        load_model_file(path)
    with pytest.raises(CheckpointError, match='not found'):
        load_model_file(tmp_path / 'absent.safetensors')


@pytest.mark.parametrize(
    ('text', 'match'),
    [
        ('{not json', 'corrupt metadata'),
        ('[1, 2]', 'no format_version'),
        (json.dumps({'format_version': FORMAT_VERSION + 1}), 'update dspt-geo'),
    ],
)
def test_bad_metadata(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / 'model.safetensors'
    save_file({'w': torch.ones(2)}, path, metadata={'dspt_geo': text})
    with pytest.raises(CheckpointError, match=match):
        load_model_file(path)
