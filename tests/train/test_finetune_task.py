"""The fine-tuning task's classification loss: label smoothing and Mixup (issue 13)."""

import pytest
import torch
import torch.nn.functional as F

from dspt_geo.models import build_encoder, build_task_model
from dspt_geo.train.finetune import FinetuneTask


def classify_task(**options) -> FinetuneTask:
    torch.manual_seed(0)
    encoder, _ = build_encoder(
        'vit_tiny_patch16_224',
        13,
        image_size=16,
        patch_size=8,
        model_args={'depth': 1, 'embed_dim': 16, 'num_heads': 2},
    )
    model = build_task_model('classify', encoder, 4)
    torch.nn.init.normal_(model.head.weight)  # not near zero: targets matter
    return FinetuneTask(model.config(), list('abcd'), model=model, **options)


def batch(size: int = 6) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {'image': torch.randn(size, 13, 16, 16), 'label': torch.arange(size) % 4}


@pytest.mark.parametrize('smoothing', [0.0, 0.1])
def test_the_loss_is_cross_entropy_with_label_smoothing(smoothing):
    task = classify_task(label_smoothing=smoothing)
    data = batch()

    loss = task.training_step(data, 0)

    logits = task.model(data['image'])
    expected = F.cross_entropy(logits, data['label'], label_smoothing=smoothing)
    torch.testing.assert_close(loss, expected)


def test_mixup_changes_the_loss_and_every_parameter_gets_a_gradient():
    data = batch(5)  # an odd batch
    plain = classify_task(label_smoothing=0.1).training_step(data, 0)
    task = classify_task(label_smoothing=0.1, mixup=True)

    torch.manual_seed(2)
    losses = [task.training_step(data, 0) for _ in range(3)]

    assert all(loss.isfinite() for loss in losses)
    assert all(not torch.isclose(loss, plain) for loss in losses)
    losses[0].backward()
    assert all(p.grad is not None for p in task.parameters() if p.requires_grad)
