"""Classification augmentation: band-safe jitter, blur, erasing, Mixup/CutMix (issue 13)."""

import pytest
import torch
import torch.nn.functional as F

from dspt_geo.data.augment import ClassifyAugmentation, mix_batch

#: Band counts: EuroSAT MS (13), Sentinel-1 VV/VH (2), RGB, panchromatic.
BANDS = (13, 2, 3, 1)


def batch(bands: int, dtype: torch.dtype = torch.float32, size: int = 32):
    """A standardised batch with a nodata corner, and its valid mask."""
    torch.manual_seed(bands)
    images = torch.randn(6, bands, size, size, dtype=dtype)
    valid = torch.ones(6, size, size, dtype=torch.bool)
    valid[:, :4, :4] = False
    return images.masked_fill(~valid.unsqueeze(1), 0.0), valid


@pytest.mark.parametrize('bands', BANDS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_every_augmentation_keeps_shape_dtype_and_nodata(bands, dtype):
    images, valid = batch(bands, dtype)
    augment = ClassifyAugmentation(jitter=1.0, blur=1.0, erase=1.0)

    out = augment(images, valid)

    assert out.shape == images.shape and out.dtype == dtype
    assert out.isfinite().all()
    assert not torch.equal(out, images)
    assert (out[:, :, :4, :4] == 0).all()  # nodata stays at the band mean


@pytest.mark.parametrize('bands', BANDS)
def test_band_jitter_gives_each_band_its_own_gain_and_offset(bands):
    images, valid = batch(bands)
    augment = ClassifyAugmentation(jitter=1.0, gain=0.2, offset=0.2, blur=0, erase=0)

    out = augment(images, valid)

    # Per sample and band, out = gain * in + offset exactly (a least-squares fit).
    inside = valid[0].flatten()
    x = images.flatten(2)[:, :, inside]
    y = out.flatten(2)[:, :, inside]
    gain = ((x - x.mean(-1, keepdim=True)) * (y - y.mean(-1, keepdim=True))).sum(-1) / (
        x - x.mean(-1, keepdim=True)
    ).square().sum(-1)
    offset = y.mean(-1) - gain * x.mean(-1)
    torch.testing.assert_close(y, gain[..., None] * x + offset[..., None])
    assert ((gain - 1).abs() <= 0.2 + 1e-5).all() and (offset.abs() <= 0.2 + 1e-5).all()
    assert gain.unique().numel() == gain.numel()  # no two bands or samples alike


def test_blur_smooths_all_bands_alike():
    images, valid = batch(13)
    augment = ClassifyAugmentation(jitter=0, blur=1.0, erase=0)

    out = augment(images, valid)

    def roughness(x):
        return (x[..., 1:] - x[..., :-1]).abs().mean(dim=(-1, -2))

    assert (roughness(out) < roughness(images)).all()
    torch.testing.assert_close(out.mean(), images.mean(), atol=0.02, rtol=0)


def test_erasing_sets_one_rectangle_of_every_band_to_zero():
    images, valid = batch(13, size=64)
    augment = ClassifyAugmentation(jitter=0, blur=0, erase=1.0)

    out = augment(images, valid)

    changed = out != images
    assert torch.equal(changed.any(1), changed.all(1))  # the same pixels in each band
    assert (out[changed] == 0).all()
    for sample in changed.any(1):
        rows, cols = sample.any(1).nonzero()[:, 0], sample.any(0).nonzero()[:, 0]
        box = sample[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all()  # a rectangle (outside the nodata corner)
        assert 0.02 * 64 * 64 <= box.numel() <= 64 * 64 / 3 + 64


def test_all_off_is_identity():
    images, valid = batch(2)
    out = ClassifyAugmentation(jitter=0, blur=0, erase=0)(images, valid)
    assert torch.equal(out, images)


def test_label_smoothing_targets():
    images, _ = batch(13)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])

    mixed, targets = mix_batch(images, labels, 5, smoothing=0.1)

    assert torch.equal(mixed, images)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    assert targets.argmax(1).tolist() == labels.tolist()
    torch.testing.assert_close(targets.max(1).values, torch.full((6,), 0.92))
    torch.testing.assert_close(targets.min(1).values, torch.full((6,), 0.02))


@pytest.mark.parametrize('size', [6, 5])  # odd batches mix too
@pytest.mark.parametrize(('mixup', 'cutmix'), [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_and_cutmix_targets_sum_to_one_and_match_the_images(size, mixup, cutmix):
    torch.manual_seed(0)
    images = torch.randn(size, 2, 16, 16)
    labels = torch.arange(size) % 3
    for _ in range(5):
        mixed, targets = mix_batch(
            images, labels, 3, mixup_alpha=mixup, cutmix_alpha=cutmix, smoothing=0.1
        )
        assert mixed.shape == images.shape and mixed.dtype == images.dtype
        torch.testing.assert_close(targets.sum(1), torch.ones(size))
        assert (targets >= 0).all()
        # Sample 0 is lam * itself + (1 - lam) * its partner, pixel by pixel
        # (Mixup) or by area (CutMix); the targets carry the same lam.
        partner = images.flip(0)
        cut = bool(((mixed == images) | (mixed == partner)).all())
        if cut:
            lam = (mixed[0] == images[0]).float().mean()
        else:
            lam = ((mixed[0] - partner[0]) / (images[0] - partner[0])).mean()
        assert cut == (mixup == 0) or (mixup and cutmix)
        expected = (
            0.9
            * (lam * F.one_hot(labels, 3) + (1 - lam) * F.one_hot(labels.flip(0), 3))
            + 0.1 / 3
        )
        torch.testing.assert_close(targets[0], expected[0].float(), atol=1e-4, rtol=0)
