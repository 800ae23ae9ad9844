"""The learning-rate schedule and the weight-decay groups."""

import itertools
import math

import pytest
import torch
from torch import nn

from dspt_geo.models import build_encoder, build_task_model
from dspt_geo.train.optim import (
    WarmupCosine,
    adamw,
    decay_groups,
    layer_decay_groups,
    scaled_lr,
)


def schedule(total: int, warmup: int = 2, min_ratio: float = 0.0) -> WarmupCosine:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    return WarmupCosine(optimizer, warmup, total, min_ratio)


def run(scheduler: WarmupCosine, steps: int) -> list[float]:
    """The learning rate of each of *steps* optimiser steps."""
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.optimizer.param_groups[0]['lr'])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_then_cosine_to_the_floor():
    lrs = run(schedule(total=20, warmup=4, min_ratio=0.1), 21)

    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:]))
    assert lrs[12] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert lrs[20] == pytest.approx(0.1)


def resume(scheduler: WarmupCosine, total: int) -> WarmupCosine:
    """A new schedule of *total* steps, restored from *scheduler* as Lightning does."""
    resumed = schedule(total)
    resumed.optimizer.load_state_dict(scheduler.optimizer.state_dict())
    resumed.load_state_dict(scheduler.state_dict())
    return resumed


def test_resume_restores_the_step():
    uninterrupted = run(schedule(total=20), 20)
    first = schedule(total=20)
    before = run(first, 8)

    after = run(resume(first, total=20), 12)

    assert before + after == pytest.approx(uninterrupted)


def test_resume_with_more_steps_stretches_the_cosine():
    """A finished run continued to 40 steps goes on along a cosine of 40 steps."""
    finished = schedule(total=20)
    run(finished, 20)
    assert finished.optimizer.param_groups[0]['lr'] == 0

    after = run(resume(finished, total=40), 20)

    # The first step takes the rate the optimiser stored; then the 40-step curve.
    assert after[1:] == pytest.approx(run(schedule(total=40), 40)[21:])
    assert min(after[1:]) > 0


def test_norms_biases_and_tokens_take_no_weight_decay():
    model = nn.Module()
    model.linear = nn.Linear(4, 4)
    model.norm = nn.LayerNorm(4)
    model.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
    model.pos_embed = nn.Parameter(torch.zeros(1, 5, 4))
    model.frozen = nn.Parameter(torch.zeros(4, 4), requires_grad=False)

    decay, no_decay = decay_groups(model.named_parameters(), 0.05)

    assert decay['weight_decay'] == 0.05 and no_decay['weight_decay'] == 0.0
    assert [p is model.linear.weight for p in decay['params']] == [True]
    assert len(no_decay['params']) == 5  # linear.bias, norm x2, cls_token, pos_embed


def test_scaled_lr():
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)


def test_layer_decay_groups_scale_the_rate_by_depth():
    encoder, _ = build_encoder(
        'vit_tiny_patch16_224',
        3,
        image_size=32,
        patch_size=8,
        model_args={'depth': 3, 'embed_dim': 32, 'num_heads': 2},
    )
    model = build_task_model('classify', encoder, 4)

    groups = layer_decay_groups(model, lr=1.0, weight_decay=0.05, layer_decay=0.5)

    lr_of, decay_of = {}, {}
    for group in groups:
        for param in group['params']:
            lr_of[id(param)], decay_of[id(param)] = group['lr'], group['weight_decay']
    named = dict(model.named_parameters())
    assert set(lr_of) == {id(p) for p in named.values() if p.requires_grad}
    assert id(named['encoder.norm.weight']) not in lr_of  # fc_norm replaces it
    # Head and its norm at the peak, block i at 0.5^(3 + 1 - (i + 1)), stem slowest.
    assert lr_of[id(named['head.weight'])] == 1.0
    assert lr_of[id(named['fc_norm.weight'])] == 1.0
    assert lr_of[id(named['encoder.blocks.2.attn.qkv.weight'])] == 0.5
    assert lr_of[id(named['encoder.blocks.0.mlp.fc1.weight'])] == 0.125
    assert lr_of[id(named['encoder.patch_embed.proj.weight'])] == 0.0625
    assert lr_of[id(named['encoder.cls_token'])] == 0.0625
    # No weight decay on biases, norms and tokens (decay_groups' rule).
    assert decay_of[id(named['head.weight'])] == 0.05
    assert decay_of[id(named['head.bias'])] == 0.0
    assert decay_of[id(named['encoder.blocks.1.norm1.weight'])] == 0.0
    assert decay_of[id(named['encoder.cls_token'])] == 0.0
    assert decay_of[id(named['encoder.blocks.1.attn.proj.weight'])] == 0.05
    # The schedule keeps the ratios: every group follows the same curve.
    optimizer = torch.optim.AdamW(groups)
    scheduler = WarmupCosine(optimizer, warmup_steps=2, total_steps=10)
    optimizer.step()
    scheduler.step()
    rates = {group['layer_id']: group['lr'] for group in optimizer.param_groups}
    assert rates[4] == pytest.approx(1.0) and rates[0] == pytest.approx(0.0625)


def test_adamw_is_fused_on_the_cpu_and_updates_as_the_default_implementation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    twin = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    twin.load_state_dict(model.state_dict())
    groups = decay_groups(model.named_parameters(), 0.05)
    fused = adamw(groups, 1e-2, (0.9, 0.95))
    reference = torch.optim.AdamW(
        decay_groups(twin.named_parameters(), 0.05), lr=1e-2, betas=(0.9, 0.95)
    )
    assert fused.defaults['fused'] is True
    assert not reference.defaults.get('fused')
    x = torch.randn(16, 4)
    for _ in range(5):
        for net, optimizer in ((model, fused), (twin, reference)):
            net(x).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # Its state loads into the default implementation (a resumed run on other hardware).
    reference.load_state_dict(fused.state_dict())


def test_adamw_falls_back_where_fused_kernels_do_not_apply():
    param = nn.Parameter(torch.zeros(3, dtype=torch.float64, device='meta'))
    assert not adamw([param], 1e-3).defaults.get('fused')
