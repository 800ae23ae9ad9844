"""The fine-tuning task's segmentation loss: UperNet plus the auxiliary FCN head."""

import pytest
import torch
import torch.nn.functional as F

from dspt_geo.models import SegmentationModel, build_encoder, build_task_model
from dspt_geo.train.finetune import AUX_WEIGHT, FinetuneTask

pytestmark = pytest.mark.filterwarnings('ignore:.*self.log.*')


def segmentation_task(aux_weight: float = AUX_WEIGHT) -> FinetuneTask:
    torch.manual_seed(0)
    encoder, _ = build_encoder(
        'vit_tiny_patch16_224',
        4,
        image_size=32,
        patch_size=8,
        model_args={'depth': 4, 'embed_dim': 32, 'num_heads': 2},
    )
    model = build_task_model('segment', encoder, 3)
    return FinetuneTask(
        model.config(), ['a', 'b', 'c'], aux_weight=aux_weight, model=model
    )


def batch(ignore_index: int = 255) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    mask = torch.randint(0, 3, (4, 32, 32), generator=generator)
    mask[:, :4] = ignore_index
    return {'image': torch.randn(4, 4, 32, 32, generator=generator), 'mask': mask}


def test_the_loss_adds_the_auxiliary_head_at_its_weight():
    task = segmentation_task().eval()  # no dropout: the two computations agree
    data = batch()

    loss = task.training_step(data, 0)

    model = task.model
    assert isinstance(model, SegmentationModel) and task.aux_head is not None
    features = model.forward_features(data['image'])
    aux = F.interpolate(
        task.aux_head(features[model.AUX_LEVEL]), size=(32, 32), mode='bilinear'
    )
    main = F.cross_entropy(model(data['image']), data['mask'], ignore_index=255)
    auxiliary = F.cross_entropy(aux, data['mask'], ignore_index=255)
    assert AUX_WEIGHT == 0.4
    assert loss.item() == pytest.approx((main + 0.4 * auxiliary).item(), rel=1e-5)
    assert auxiliary.item() > 0.5  # a fresh head: the term counts


def test_the_auxiliary_head_learns_and_is_not_part_of_the_model():
    task = segmentation_task().train()

    task.training_step(batch(), 0).backward()

    assert task.aux_head is not None
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for p in task.aux_head.parameters()
    )
    assert not any('aux' in name for name in task.model.state_dict())
    assert any(name.startswith('aux_head.') for name in task.state_dict())


def test_without_the_auxiliary_head_the_loss_is_plain_cross_entropy():
    task = segmentation_task(aux_weight=0).eval()
    data = batch()

    loss = task.training_step(data, 0)

    assert task.aux_head is None
    expected = F.cross_entropy(
        task.model(data['image']), data['mask'], ignore_index=255
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_batch_without_labels_gives_a_zero_loss_that_reaches_every_head():
    task = segmentation_task().train()
    data = batch()
    data['mask'][:] = 255

    loss = task.training_step(data, 0)
    loss.backward()

    assert loss.item() == 0.0
    assert task.aux_head is not None
    assert all(p.grad is not None for p in task.aux_head.parameters())
