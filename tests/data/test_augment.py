"""Classification augmentation: band-safe jitter, blur, erasing, Mixup/CutMix (issue 13)."""

import kornia
import pytest
import torch
import torch.nn.functional as F

from dspt_geo.data.augment import (
    ClassifyAugmentation,
    RandomErasing,
    RandomGaussianBlur,
    gaussian_blur,
    mix_batch,
)

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

    # sigma 0.1 barely blurs (the next pixel weighs e^-50): no sample gets rougher.
    assert (roughness(out) <= roughness(images) * (1 + 1e-5)).all()
    assert roughness(out).mean() < 0.9 * roughness(images).mean()
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


@pytest.mark.parametrize('bands', BANDS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_gaussian_blur_is_kornias_with_each_samples_sigma(bands, dtype):
    images, _ = batch(bands, dtype)
    sigma = torch.tensor([0.1, 0.25, 0.5, 0.7, 0.9, 1.0])

    out = gaussian_blur(images, sigma, 5)

    assert out.shape == images.shape and out.dtype == dtype
    for i, s in enumerate(sigma.tolist()):
        reference = kornia.filters.gaussian_blur2d(
            images[i : i + 1], (5, 5), (s, s), border_type='reflect'
        )
        torch.testing.assert_close(out[i : i + 1], reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('bands', BANDS)
def test_blur_leaves_the_others_untouched_and_blurs_the_chosen_with_their_sigma(bands):
    torch.manual_seed(bands)
    images = torch.randn(40, bands, 16, 16)
    blur = RandomGaussianBlur(5, sigma=(0.1, 1.0), p=0.3)

    params = blur.forward_parameters(images.shape)
    out = blur(images, params)

    chosen = params['batch_prob']
    assert 0 < chosen.sum() < 40
    assert torch.equal(out[~chosen], images[~chosen])  # bit-identical
    for i in chosen.nonzero()[:, 0].tolist():
        s = float(params['sigma'][i])
        assert 0.1 <= s <= 1.0
        reference = kornia.filters.gaussian_blur2d(
            images[i : i + 1], (5, 5), (s, s), border_type='reflect'
        )
        torch.testing.assert_close(out[i : i + 1], reference, atol=1e-5, rtol=1e-5)


def test_blur_and_erasing_choose_samples_with_their_probability():
    torch.manual_seed(0)
    images = torch.randn(16, 2, 12, 12)
    for augmentation, p in (
        (RandomGaussianBlur(5, sigma=(0.1, 1.0), p=0.2), 0.2),
        (RandomErasing(scale=(0.02, 1 / 3), ratio=(0.3, 3.3), p=0.25), 0.25),
    ):
        changed = torch.cat(
            [(augmentation(images) != images).flatten(1).any(1) for _ in range(300)]
        )
        # 4,800 samples: the share is within 5 standard deviations of p.
        assert abs(changed.float().mean() - p) < 5 * (p * (1 - p) / 4800) ** 0.5
    assert torch.equal(RandomGaussianBlur(5, (0.1, 1.0), p=0.0)(images), images)


def test_erasing_draws_areas_and_aspect_ratios_in_their_ranges():
    torch.manual_seed(0)
    erase = RandomErasing(scale=(0.02, 1 / 3), ratio=(0.3, 3.3), value=0.0, p=1.0)
    params = erase.forward_parameters(torch.Size((20000, 1, 128, 128)))

    h, w = params['heights'].double(), params['widths'].double()
    # Sides are rounded (and clamped to the image): bounds within half a pixel.
    assert ((h - 0.5) * (w - 0.5) <= 128 * 128 / 3).all()
    assert ((h + 0.5) * (w + 0.5) >= 0.02 * 128 * 128).all()
    assert ((h - 0.5) / (w + 0.5) <= 3.3).all() and ((h + 0.5) / (w - 0.5) >= 0.3).all()
    assert (params['xs'] >= 0).all() and (params['xs'] + w <= 128).all()
    assert (params['ys'] >= 0).all() and (params['ys'] + h <= 128).all()
    # Areas uniform in the range; aspect ratios log-uniform (timm's and
    # torchvision's draw: a quarter of the log range holds a quarter of them).
    share = h * w / 128**2
    assert abs(share.mean() - (0.02 + 1 / 3) / 2) < 0.005
    low, high = torch.tensor([0.3, 3.3]).log().tolist()
    log_aspect = (h / w).log()
    assert abs(log_aspect.mean() - (low + high) / 2) < 0.03
    quarter = float((log_aspect < low + (high - low) / 4).double().mean())
    assert abs(quarter - 0.25) < 0.02
    assert 0.5 < float(params['batch_prob'].double().mean()) <= 1.0


@pytest.mark.parametrize('bands', BANDS)
def test_erasing_zeroes_the_drawn_rectangle_of_the_chosen_samples(bands):
    torch.manual_seed(bands)
    images = torch.rand(32, bands, 24, 20) + 1  # no zero before erasing
    erase = RandomErasing(scale=(0.02, 1 / 3), ratio=(0.3, 3.3), p=0.5)

    params = erase.forward_parameters(images.shape)
    out = erase(images, params)

    erased = out == 0
    assert torch.equal(erased.any(1), erased.all(1))  # every band alike
    assert torch.equal(out[~erased], images[~erased])
    for i in range(32):
        expected = torch.zeros(24, 20, dtype=torch.bool)
        if params['batch_prob'][i]:
            y, x = int(params['ys'][i]), int(params['xs'][i])
            h, w = int(params['heights'][i]), int(params['widths'][i])
            expected[y : y + h, x : x + w] = True
        assert torch.equal(erased[i, 0], expected)
