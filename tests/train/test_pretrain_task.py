"""The MAE pre-training task: training steps and checkpoint state."""

import io
import random

import numpy as np
import torch

from dspt_geo.train import MAEPretrainTask

SENSORS = {'optical': ['blue', 'green', 'red', 'nir'], 'sar': ['VV', 'VH']}


def tiny_task() -> MAEPretrainTask:
    return MAEPretrainTask(
        'vit_tiny_patch16_224',
        SENSORS,
        model_args={'depth': 1, 'embed_dim': 32, 'num_heads': 2},
        image_size=16,
        patch_size=8,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
    )


def draws() -> tuple[float, float, float]:
    return torch.rand(1).item(), float(np.random.rand()), random.random()


def test_random_generators_are_restored_from_a_checkpoint():
    task = tiny_task()
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    checkpoint: dict = {}
    task.on_save_checkpoint(checkpoint)
    expected = draws()
    # Through a file loaded as Lightning loads ours: tensors and plain data only.
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)

    torch.manual_seed(4), np.random.seed(4), random.seed(4)
    task.on_load_checkpoint(loaded)

    assert draws() == expected


def test_a_step_on_one_group_trains_its_stem_and_not_the_other():
    torch.manual_seed(0)
    task = tiny_task()
    batch = {'image': torch.randn(2, 2, 16, 16), 'sensor': 'sar'}
    task.log = lambda *args, **kwargs: None

    loss = task.training_step(batch, 0)
    loss.backward()

    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in task.model.named_parameters()}
    assert grads['patch_embed.sar.proj.weight'].abs().sum() > 0
    assert grads['decoder_pred.sar.weight'].abs().sum() > 0
    assert grads['patch_embed.optical.proj.weight'] is None
    assert grads['decoder_pred.optical.weight'] is None
    assert grads['encoder.blocks.0.attn.qkv.weight'].abs().sum() > 0


def test_a_step_leaves_nodata_out_of_the_loss():
    torch.manual_seed(0)
    task = tiny_task()
    task.log = lambda *args, **kwargs: None
    images = torch.randn(2, 2, 16, 16)
    valid = torch.ones(2, 16, 16, dtype=torch.bool)
    valid[:, :, :8] = False
    losses = []
    for fill in (0.0, 50.0):
        image = torch.where(valid[:, None], images, fill)
        torch.manual_seed(1)
        batch = {'image': image, 'valid': valid, 'sensor': 'sar'}
        losses.append(task.training_step(batch, 0))

    assert torch.isfinite(losses[0])
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
    nothing = {'image': images, 'valid': torch.zeros_like(valid), 'sensor': 'sar'}
    assert task.training_step(nothing, 0) == 0
