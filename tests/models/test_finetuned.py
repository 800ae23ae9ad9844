"""Fine-tuned model files: rebuilt from their metadata, loaded strictly."""

import pytest
import torch

from dspt_geo.errors import CheckpointError
from dspt_geo.models import (
    build_encoder,
    build_task_model,
    load_finetuned,
    save_model_file,
)


@pytest.fixture
def model():
    torch.manual_seed(0)
    encoder, _ = build_encoder(
        'vit_tiny_patch16_224',
        2,
        image_size=32,
        patch_size=8,
        model_args={'depth': 2, 'embed_dim': 32, 'num_heads': 2},
    )
    return build_task_model('segment', encoder, 3, channels=16).eval()


def test_a_finetuned_file_rebuilds_the_model(model, tmp_path):
    path = tmp_path / 'model.safetensors'
    metadata = {'kind': 'finetuned', 'task': 'segment', 'model_config': model.config()}
    save_model_file(path, model.state_dict(), metadata)

    loaded, read = load_finetuned(path)

    assert not loaded.training
    assert read['task'] == 'segment'
    images = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))


def test_files_of_another_kind_are_refused(model, tmp_path):
    pretrained = tmp_path / 'pretrained.safetensors'
    save_model_file(pretrained, {'w': torch.zeros(1)}, {'kind': 'mae-pretrained'})
    with pytest.raises(
        CheckpointError, match=r'not a fine-tuned model.*pre-trained MAE'
    ):
        load_finetuned(pretrained)

    broken = tmp_path / 'broken.safetensors'
    state = dict(model.state_dict())
    state.pop('decode_head.classifier.weight')
    save_model_file(
        broken, state, {'kind': 'finetuned', 'model_config': model.config()}
    )
    with pytest.raises(CheckpointError, match='do not fit its model configuration'):
        load_finetuned(broken)
