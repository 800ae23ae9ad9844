from collections.abc import Callable

import pytest
import torch
from timm.models import checkpoint_seq
from torch import nn

from dspt_geo.models import MaskedAutoencoder, random_masking
from dspt_geo.models import mae as mae_module

MakeMAE = Callable[..., MaskedAutoencoder]


@pytest.mark.parametrize(
    ('length', 'ratio'), [(16, 0.75), (36, 0.75), (100, 0.9), (49, 0.5), (10, 0.3)]
)
def test_masking_keeps_round_share_visible(length: int, ratio: float) -> None:
    torch.manual_seed(0)
    tokens = torch.randn(3, length, 4)
    visible, mask, ids_restore = random_masking(tokens, ratio)
    keep = round(length * (1 - ratio))
    assert visible.shape == (3, keep, 4)
    assert torch.equal(mask.sum(dim=1), torch.full((3,), float(length - keep)))
    for sample in range(3):
        # The visible tokens are exactly the unmasked ones, in shuffled order.
        expected = tokens[sample][mask[sample] == 0]
        order = ids_restore[sample].argsort()[:keep].sort().indices
        torch.testing.assert_close(visible[sample][order], expected)
    # ids_restore puts [visible, masked] back in place.
    ids_shuffle = ids_restore.argsort(dim=1)
    assert torch.equal(mask.gather(1, ids_shuffle)[:, :keep], torch.zeros(3, keep))


def test_masking_differs_per_sample() -> None:
    torch.manual_seed(0)
    mask = random_masking(torch.randn(4, 64, 2), 0.75)[1]
    assert len({tuple(row.tolist()) for row in mask}) == 4


@pytest.mark.parametrize('ratio', [0.0, 1.0, 0.99])
def test_masking_needs_visible_and_masked_patches(ratio: float) -> None:
    with pytest.raises(ValueError, match='at least one patch'):
        random_masking(torch.randn(1, 16, 4), ratio)


@pytest.mark.parametrize('size', [(32, 32), (48, 48), (48, 32)])
def test_forward_shapes_for_several_sizes(
    make_mae: MakeMAE, size: tuple[int, int]
) -> None:
    mae = make_mae({'opt': 4})
    images = torch.randn(2, 4, *size)
    output = mae(images, 'opt', mask_ratio=0.75)
    length = (size[0] // 8) * (size[1] // 8)
    assert output.pred.shape == (2, length, 8 * 8 * 4)
    assert output.mask.shape == (2, length)
    assert torch.equal(
        output.mask.sum(dim=1), torch.full((2,), length - round(length / 4.0))
    )
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)
    features = mae.forward_features(images, 'opt')
    assert features.shape == (2, 1 + length, 32)
    torch.testing.assert_close(features, mae.forward_features(images, 'opt'))


def test_loss_only_counts_masked_patches(make_mae: MakeMAE) -> None:
    mae = make_mae({'opt': 3})
    images = torch.randn(2, 3, 32, 32)
    output = mae(images, 'opt')
    mask = output.mask.reshape(2, 4, 4)
    visible = (mask[0] == 0).nonzero()[0].tolist()
    masked = (mask[0] == 1).nonzero()[0].tolist()

    def perturbed(row: int, col: int) -> torch.Tensor:
        changed = images.clone()
        changed[0, :, row * 8 : (row + 1) * 8, col * 8 : (col + 1) * 8] += (
            5 * torch.randn(3, 8, 8)
        )
        return changed

    same = mae.forward_loss(perturbed(*visible), output.pred, output.mask)
    torch.testing.assert_close(same, output.loss)
    other = mae.forward_loss(perturbed(*masked), output.pred, output.mask)
    assert not torch.isclose(other, output.loss)


@pytest.mark.parametrize('norm_pix_loss', [True, False])
def test_loss_targets(make_mae: MakeMAE, norm_pix_loss: bool) -> None:
    mae = make_mae({'sar': 2}, norm_pix_loss=norm_pix_loss)
    images = 3 + 2 * torch.randn(2, 2, 32, 32)
    patches = mae.patchify(images)
    mask = torch.ones(2, 16)
    if norm_pix_loss:
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True)
        target = (patches - mean) / (var + 1e-6) ** 0.5
        assert target.mean(dim=-1).abs().max() < 1e-5
        torch.testing.assert_close(
            target.var(dim=-1), torch.ones(2, 16), atol=1e-4, rtol=0
        )
    else:
        target = patches
    assert mae.forward_loss(images, target, mask) < 1e-10
    assert mae.forward_loss(images, target + 0.5, mask) == pytest.approx(0.25)


def _nodata_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 3-band 32 px images: a nodata block, a fully invalid and a partial patch."""
    images = 3 + 2 * torch.randn(2, 3, 32, 32)
    valid = torch.ones(2, 32, 32, dtype=torch.bool)
    valid[0, :, :12] = False  # patch column 0 invalid, column 1 half valid
    valid[1, 20:, 20:] = False
    return images, valid


@pytest.mark.parametrize('norm_pix_loss', [True, False])
def test_fill_value_of_nodata_does_not_change_the_loss(
    make_mae: MakeMAE, norm_pix_loss: bool
) -> None:
    mae = make_mae({'opt': 3}, norm_pix_loss=norm_pix_loss)
    images, valid = _nodata_batch()
    losses = []
    for fill in (0.0, -9999.0, 1e4, float('nan')):
        filled = torch.where(valid[:, None], images, fill)
        torch.manual_seed(7)  # the same patches masked every time
        losses.append(mae(filled, 'opt', valid=valid).loss)
    assert torch.isfinite(losses[0])
    for loss in losses[1:]:
        torch.testing.assert_close(loss, losses[0], rtol=0, atol=0)
    # Without the mask the fill value is learnt: the loss changes with it.
    torch.manual_seed(7)
    unmasked = mae(torch.where(valid[:, None], images, 1e4), 'opt').loss
    assert not torch.isclose(unmasked, losses[0])


def test_norm_pix_targets_use_valid_pixels_only(make_mae: MakeMAE) -> None:
    mae = make_mae({'sar': 3})
    images, valid = _nodata_batch()
    patches = mae.patchify(images)
    weights = mae.patchify(valid[:, None].expand(-1, 3, -1, -1).float())
    target = torch.zeros_like(patches)
    for b in range(2):
        for i in range(16):
            keep = weights[b, i] > 0
            if keep.any():
                values = patches[b, i, keep]
                std = (values.var() + 1e-6) ** 0.5 if keep.sum() > 1 else 1e-3
                target[b, i, keep] = (values - values.mean()) / std
    assert ((weights.sum(-1) > 0) & (weights.sum(-1) < 192)).any(), 'partial patches'
    mask = torch.ones(2, 16)
    assert mae.forward_loss(images, target, mask, valid) < 1e-10
    # Whatever is predicted for nodata costs nothing; valid values count alike.
    noisy = target + 100 * (1 - weights) * torch.randn_like(target)
    assert mae.forward_loss(images, noisy, mask, valid) < 1e-10
    assert mae.forward_loss(images, target + 0.5, mask, valid).item() == pytest.approx(
        0.25
    )


def test_invalid_patches_get_no_gradient_and_all_invalid_stays_finite(
    make_mae: MakeMAE,
) -> None:
    mae = make_mae({'opt': 3})
    images, valid = _nodata_batch()
    pred = torch.randn(2, 16, 192, requires_grad=True)
    mask = torch.ones(2, 16)
    mae.forward_loss(images, pred, mask, valid).backward()
    assert pred.grad is not None
    per_patch = pred.grad.abs().sum(-1)
    # Image 0's first patch column and image 1's last patch hold no valid pixel.
    invalid = torch.zeros(2, 16, dtype=torch.bool)
    invalid[0, ::4] = invalid[1, 15] = True
    assert (per_patch[invalid] == 0).all()
    assert (per_patch[~invalid] > 0).all()

    nothing = torch.zeros_like(valid)
    loss = mae(images, 'opt', valid=nothing).loss
    assert torch.isfinite(loss) and loss == 0
    loss.backward()
    grads = [p.grad for p in mae.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() and (g == 0).all() for g in grads)


@pytest.mark.parametrize('chans', [1, 3, 4, 13])
def test_patchify_round_trip(make_mae: MakeMAE, chans: int) -> None:
    mae = make_mae({'any': chans})
    images = torch.randn(2, chans, 48, 32)
    patches = mae.patchify(images)
    assert patches.shape == (2, 24, 64 * chans)
    # MAE's layout: row-major patches, each flattened as (row, column, band).
    torch.testing.assert_close(
        patches[1, 0], images[1, :, :8, :8].permute(1, 2, 0).reshape(-1)
    )
    torch.testing.assert_close(
        patches[0, 5], images[0, :, 8:16, 8:16].permute(1, 2, 0).reshape(-1)
    )
    torch.testing.assert_close(mae.unpatchify(patches, (48, 32)), images)


def test_size_and_band_checks(make_mae: MakeMAE) -> None:
    mae = make_mae({'opt': 4})
    with pytest.raises(ValueError, match='not a multiple of the patch size'):
        mae(torch.randn(1, 4, 36, 32), 'opt')
    with pytest.raises(ValueError, match=r'takes \(B, 4, H, W\)'):
        mae(torch.randn(1, 3, 32, 32), 'opt')
    with pytest.raises(ValueError, match="unknown sensor group 'sar'"):
        mae(torch.randn(1, 4, 32, 32), 'sar')
    with pytest.raises(ValueError, match='do not make images'):
        mae.unpatchify(torch.randn(1, 16, 256), (32, 48))


def test_sensors_share_the_encoder_but_not_stems_and_heads(make_mae: MakeMAE) -> None:
    mae = make_mae({'opt': 4, 'sar': 2})
    state = mae.state_dict()
    assert state['patch_embed.opt.proj.weight'].shape == (32, 4, 8, 8)
    assert state['patch_embed.sar.proj.weight'].shape == (32, 2, 8, 8)
    assert state['decoder_pred.opt.weight'].shape == (64 * 4, 16)
    assert state['decoder_pred.sar.weight'].shape == (64 * 2, 16)
    assert {key.split('.')[0] for key in state} == {
        'encoder', 'patch_embed', 'mask_token', 'decoder_embed', 'decoder_blocks',
        'decoder_norm', 'decoder_pred',
    }  # fmt: skip
    assert not any('pos_embed' in key for key in state)
    assert sum(key.endswith('attn.qkv.weight') for key in state) == 2 + 1

    shared = mae.encoder.blocks[0].attn.qkv.weight
    grads = {}
    for sensor, chans in mae.sensors.items():
        mae.zero_grad(set_to_none=True)
        mae(torch.randn(2, chans, 32, 32), sensor).loss.backward()
        grads[sensor] = shared.grad.clone()
        other = 'sar' if sensor == 'opt' else 'opt'
        assert mae.patch_embed[other].proj.weight.grad is None
        assert mae.decoder_pred[other].weight.grad is None
    assert grads['opt'].abs().sum() > 0 and grads['sar'].abs().sum() > 0
    assert not torch.equal(grads['opt'], grads['sar'])


def test_every_parameter_of_the_path_gets_a_gradient(make_mae: MakeMAE) -> None:
    mae = make_mae({'opt': 4, 'sar': 2})
    mae(torch.randn(2, 2, 32, 32), 'sar').loss.backward()
    for name, parameter in mae.named_parameters():
        if '.opt.' in name:
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None, name
            assert torch.isfinite(parameter.grad).all(), name
            assert parameter.grad.abs().sum() > 0, name


def test_training_reduces_the_loss(make_mae: MakeMAE) -> None:
    mae = make_mae({'opt': 3})
    ramp = torch.linspace(0, 1, 32)
    images = torch.stack(
        [
            ramp[None, :] * ramp[:, None],
            ramp.expand(32, 32),
            ramp[:, None].expand(32, 32),
        ]
    )
    images = torch.stack([images, images.flip(-1)])
    optimiser = torch.optim.AdamW(mae.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = mae(images, 'opt', mask_ratio=0.5).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_reconstruct_for_previews(make_mae: MakeMAE) -> None:
    mae = make_mae({'opt': 3})
    images = 2 + torch.randn(2, 3, 32, 48)
    torch.manual_seed(1)
    masked, reconstruction = mae.reconstruct(images, 'opt', mask_ratio=0.75)
    torch.manual_seed(1)
    output = mae(images, 'opt', mask_ratio=0.75)
    assert masked.shape == reconstruction.shape == images.shape
    assert not reconstruction.requires_grad
    pixel_mask = mae.unpatchify(output.mask[..., None].expand(-1, -1, 64 * 3), (32, 48))
    assert torch.equal(masked, torch.where(pixel_mask == 1, 0.0, images))
    # norm_pix predictions are brought back to the mean and deviation of each patch.
    patches = mae.patchify(images)
    std = (patches.var(dim=-1, keepdim=True) + 1e-6).sqrt()
    expected = output.pred * std + patches.mean(dim=-1, keepdim=True)
    torch.testing.assert_close(mae.patchify(reconstruction), expected)


def test_initialisation_follows_mae(make_mae: MakeMAE) -> None:
    mae = make_mae({'opt': 4}, encoder={'embed_dim': 64})
    assert mae.encoder.pos_embed is None
    assert isinstance(mae.encoder.patch_embed, nn.Identity)
    for module in mae.modules():
        if isinstance(module, nn.Linear):
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
        if isinstance(module, nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
    assert 0.01 < mae.encoder.cls_token.std() < 0.03
    weight = mae.patch_embed['opt'].proj.weight
    bound = (
        6 / (weight[0].numel() + weight.shape[0])
    ) ** 0.5  # xavier over (out, in*p*p)
    assert weight.abs().max() <= bound
    assert weight.abs().max() > 0.9 * bound


@pytest.mark.parametrize(
    ('sensors', 'encoder', 'match'),
    [
        ({'a.b': 3}, {}, 'invalid sensor group'),
        ({}, {}, 'at least one sensor group'),
        ({'opt': 3}, {'reg_tokens': 1}, 'class token'),
        ({'opt': 3}, {'embed_dim': 30, 'num_heads': 2}, 'multiples of 4'),
    ],
)
def test_rejects_unsupported_setups(
    make_mae: MakeMAE, sensors: dict[str, int], encoder: dict[str, int], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        make_mae(sensors, encoder=encoder)


def test_encoder_gradient_checkpointing_is_honoured(
    make_mae: MakeMAE, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def spy(blocks: nn.Module, x: torch.Tensor) -> torch.Tensor:
        calls.append(blocks)
        return checkpoint_seq(blocks, x)

    monkeypatch.setattr(mae_module, 'checkpoint_seq', spy)
    mae = make_mae({'opt': 3})
    images = torch.randn(2, 3, 32, 32)
    torch.manual_seed(5)
    plain = mae(images, 'opt').loss
    plain.backward()
    grad = mae.encoder.blocks[0].attn.qkv.weight.grad.clone()
    mae.zero_grad()
    mae.encoder.set_grad_checkpointing(True)
    torch.manual_seed(5)
    checkpointed = mae(images, 'opt').loss
    assert checkpointed.grad_fn is not None
    checkpointed.backward()
    torch.testing.assert_close(checkpointed, plain)
    torch.testing.assert_close(mae.encoder.blocks[0].attn.qkv.weight.grad, grad)
    assert calls == [mae.encoder.blocks]
