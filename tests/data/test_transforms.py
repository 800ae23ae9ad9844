"""Batch augmentations of labelled data: masks and boxes follow the images."""

import pytest
import torch
import torch.nn.functional as F

from dspt_geo.data.statistics import BandStatistics
from dspt_geo.data.transforms import (
    band_jitter,
    flip_rotate,
    normalise,
    random_resized_crop,
    scale_crop,
    scale_jitter,
)


def squares(count: int, size: int, seed: int = 0):
    """Images holding one bright rectangle each, its mask and its box."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, 2, size, size)
    masks = torch.zeros(count, size, size, dtype=torch.long)
    boxes = []
    for i in range(count):
        x0, y0 = torch.randint(0, size - 8, (2,), generator=generator).tolist()
        w, h = torch.randint(2, 8, (2,), generator=generator).tolist()
        images[i, :, y0 : y0 + h, x0 : x0 + w] = 1.0
        masks[i, y0 : y0 + h, x0 : x0 + w] = 1
        boxes.append(torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=torch.float32))
    return images, masks, boxes


def box_of(mask: torch.Tensor) -> torch.Tensor:
    rows, cols = torch.nonzero(mask, as_tuple=True)
    return torch.tensor(
        [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=torch.float32
    )


@pytest.mark.parametrize('size', [(24, 24), (16, 24)])
def test_flips_and_rotations_move_masks_and_boxes_with_the_images(size):
    images, masks, boxes = squares(64, 16)
    if size[0] != size[1]:  # not square: only flips and half turns
        images = torch.nn.functional.pad(images, (0, size[1] - 16, 0, size[0] - 16))
        masks = torch.nn.functional.pad(masks, (0, size[1] - 16, 0, size[0] - 16))
    valid = torch.ones(64, *size, dtype=torch.bool)
    valid[:, 0, 0] = False

    out, out_valid, out_masks, out_boxes = flip_rotate(
        images, valid, masks, boxes, generator=torch.Generator().manual_seed(1)
    )

    assert out.shape == images.shape and out_masks.shape == masks.shape
    corners = set()
    for i in range(64):
        assert torch.equal(out[i, 0] > 0.5, out_masks[i] == 1)
        assert torch.equal(out_boxes[i][0], box_of(out_masks[i]))
        corners.add(tuple(torch.nonzero(~out_valid[i])[0].tolist()))
    # The invalid corner pixel went to every corner: flips and turns all happened.
    assert len(corners) == 4


def test_scale_jitter_and_crops_keep_boxes_on_their_objects():
    images, _, boxes = squares(32, 32, seed=2)
    labels = [torch.tensor([3]) for _ in boxes]
    valid = torch.ones(32, 32, 32, dtype=torch.bool)

    out, out_valid, out_boxes, out_labels = scale_crop(
        images, valid, boxes, labels, generator=torch.Generator().manual_seed(0)
    )

    assert out.shape == images.shape and out_valid.shape == valid.shape
    kept = 0
    for i in range(32):
        assert len(out_boxes[i]) == len(out_labels[i]) <= 1
        if len(out_boxes[i]):
            kept += 1
            assert out_labels[i].tolist() == [3]
            box = out_boxes[i][0]
            assert ((box >= 0) & (box <= 32)).all()
            # Bilinear resampling blurs edges by at most a pixel.
            assert (box - box_of(out[i, 0] > 0.5)).abs().max() <= 1.0
        # Padding (a shrunk image) is invalid, and zero.
        assert (out[i][:, ~out_valid[i]] == 0).all()
    assert kept > 16
    assert (~out_valid).any(), 'some images shrank and were padded'


def ramps(count: int, height: int, width: int) -> torch.Tensor:
    """Windows whose bands hold each pixel centre's column and row."""
    cols = torch.arange(width, dtype=torch.float32) + 0.5
    rows = torch.arange(height, dtype=torch.float32) + 0.5
    grid = torch.stack(
        [cols.expand(height, width), rows[:, None].expand(height, width)]
    )
    return grid.expand(count, -1, -1, -1).clone()


def source_steps(views: torch.Tensor) -> torch.Tensor:
    """Window pixels per view pixel along x and y, read off the ramps' interiors."""
    q = views.shape[-1] // 4
    step_x = (views[:, 0, :, 3 * q] - views[:, 0, :, q]).mean(-1) / (2 * q)
    step_y = (views[:, 1, 3 * q, :] - views[:, 1, q, :]).mean(-1) / (2 * q)
    return torch.stack([step_x, step_y], dim=1)


def test_views_of_a_larger_window_are_mostly_not_up_sampled():
    # The pre-training rule: a window of image_size / sqrt(min scale) pixels.
    size, window = 32, 72  # ceil(32 / sqrt(0.2))
    windows = ramps(400, window, window)
    valid = torch.ones(400, window, window, dtype=torch.bool)

    views, view_valid = random_resized_crop(
        windows,
        valid,
        size,
        scale=(0.2, 1.0),
        flips=False,
        rotations=False,
        generator=torch.Generator().manual_seed(0),
    )

    assert views.shape == (400, 2, size, size) and view_valid.all()
    steps = source_steps(views)
    # Aspect ratios 3/4 to 4/3 and crops clamped to the window.
    aspect = steps[:, 0] / steps[:, 1]
    assert aspect.min() > 0.7 and aspect.max() < 1.45
    assert steps.max() <= window / size + 1e-3
    factor = steps.prod(dim=1).sqrt()  # linear scale factor of the area
    assert factor.min() > 0.97, 'the smallest crop keeps the native resolution'
    assert (factor >= 1.0 - 1e-3).float().mean() > 0.9
    assert 1.5 < factor.median() < 1.95 and factor.max() > 2.0

    # The same crop inside a window of the view's size up-samples every view.
    small = source_steps(
        random_resized_crop(
            ramps(400, size, size),
            valid[:, :size, :size],
            size,
            scale=(0.2, 1.0),
            flips=False,
            rotations=False,
        )[0]
    )
    assert (small.prod(dim=1).sqrt() <= 1.0 + 1e-3).all()


def test_valid_mask_follows_the_crop_and_the_fill_never_reaches_a_view():
    size, window = 32, 72
    windows = ramps(64, window, window)
    valid = torch.ones(64, window, window, dtype=torch.bool)
    valid[:, :, :30] = False  # columns 0-29 are nodata

    results = []
    for fill in (0.0, 1e4, float('nan')):
        filled = torch.where(valid[:, None], windows, fill)
        results.append(
            random_resized_crop(
                filled,
                valid,
                size,
                flips=False,
                rotations=False,
                generator=torch.Generator().manual_seed(1),
            )
        )
    views, view_valid = results[0]
    for other, other_valid in results[1:]:
        assert torch.equal(other, views) and torch.equal(other_valid, view_valid)

    # A valid view pixel is computed from valid window pixels (their column centres
    # are 30.5 and up; nodata may weigh under 0.001); nodata touches only a pixel's
    # width beyond the edge.
    column = views[:, 0]
    assert (column[view_valid] > 30.5 - 0.01).all()
    assert view_valid[column > 30.5 + 2.5].all()
    assert view_valid.any() and (~view_valid).any()


def test_flips_and_turns_move_the_mask_with_the_view():
    windows = torch.ones(64, 2, 32, 32)
    valid = torch.ones(64, 32, 32, dtype=torch.bool)
    valid[:, :8, :8] = False
    windows[:, :, :8, :8] = 7.0  # the fill, never seen in a view

    views, view_valid = random_resized_crop(
        windows, valid, 32, scale=(1.0, 1.0), ratio=(1.0, 1.0)
    )

    assert torch.equal(view_valid, views[:, 0] == 1.0)
    assert ((views == 0) | (views == 1)).all()
    corners = {tuple(torch.nonzero(~v)[0].tolist()) for v in view_valid}
    assert corners == {(0, 0), (0, 24), (24, 0), (24, 24)}


def test_windows_of_several_sizes_make_one_batch_of_views():
    windows = [torch.full((3, h, w), float(i)) for i, (h, w) in enumerate(
        [(40, 40), (72, 56), (32, 32), (20, 24)]
    )]  # fmt: skip
    valid = [torch.ones(w.shape[1:], dtype=torch.bool) for w in windows]

    views, view_valid = random_resized_crop(windows, valid, 32)

    assert views.shape == (4, 3, 32, 32) and view_valid.shape == (4, 32, 32)
    for i in range(4):
        torch.testing.assert_close(views[i], torch.full((3, 32, 32), float(i)))
    assert view_valid[[0, 2, 3]].all()


def blocks(count: int, size: int, block: int, seed: int = 0):
    """Images of square blocks whose value is their class, with nodata in a corner."""
    generator = torch.Generator().manual_seed(seed)
    cells = torch.randint(
        0, 5, (count, size // block, size // block), generator=generator
    )
    masks = cells.repeat_interleave(block, 1).repeat_interleave(block, 2)
    images = masks[:, None].float().expand(-1, 3, -1, -1).clone()
    valid = torch.ones(count, size, size, dtype=torch.bool)
    valid[:, : size // 4, : size // 4] = False
    images[~valid.unsqueeze(1).expand_as(images)] = 0.0
    return images, valid, masks


def test_scale_jitter_keeps_masks_aligned_with_the_images():
    images, valid, masks = blocks(32, 64, 8)

    out, out_valid, out_masks = scale_jitter(
        images,
        valid,
        masks,
        ignore_index=255,
        generator=torch.Generator().manual_seed(1),
    )

    assert out.shape == images.shape and out_masks.shape == masks.shape
    assert out_masks.dtype == masks.dtype and out_valid.dtype == torch.bool
    # Where the image is flat around a pixel (inside a block, not on an edge) it
    # holds the class that the mask gives that pixel.
    band = out[:, :1]
    flat = (F.max_pool2d(band, 3, 1, 1) == -F.max_pool2d(-band, 3, 1, 1))[:, 0]
    inside = flat & out_valid & (out_masks != 255)
    assert inside.float().mean() > 0.4
    assert torch.equal(out[:, 0][inside].long(), out_masks[inside])
    assert torch.equal(out[:, 1], out[:, 2])  # every band moved alike
    # Some samples shrank (a canvas of ignored, invalid pixels) and some grew.
    canvas = out_masks == 255
    assert canvas.any() and not out_valid[canvas].any()
    shrunk = canvas.flatten(1).any(1)
    assert 0 < shrunk.sum() < len(shrunk)
    # Invalid (nodata) pixels stay invalid: the nodata corner moves with the image.
    assert not out_valid.all(dim=(1, 2)).all()


def test_scale_jitter_factors_span_half_to_double():
    # An 8-pixel square of class 1 at the centre: its side follows the factor.
    masks = torch.zeros(256, 32, 32, dtype=torch.long)
    masks[:, 12:20, 12:20] = 1
    _, _, out_masks = scale_jitter(
        masks[:, None].float(), torch.ones(256, 32, 32, dtype=torch.bool), masks, 255,
        generator=torch.Generator().manual_seed(2),
    )  # fmt: skip

    sides = (out_masks == 1).sum(dim=(1, 2)).float().sqrt()
    # An 8-pixel square: 4 px at factor 0.5, 16 at 2 (less where a crop cuts it).
    assert sides.min() < 5 and 12 < sides.max() <= 16


def test_band_jitter_scales_and_shifts_each_band_and_keeps_nodata():
    images = torch.randn(64, 4, 8, 8)
    valid = torch.ones(64, 8, 8, dtype=torch.bool)
    valid[:, 0, 0] = False
    images[:, :, 0, 0] = 0.0

    out = band_jitter(images, valid, generator=torch.Generator().manual_seed(0))

    assert out.shape == images.shape and (out[:, :, 0, 0] == 0).all()
    # Per sample and band, an affine map out = g x + b with g in 0.8-1.2, |b| <= 0.2.
    x, y = images[:, :, 1:].flatten(2), out[:, :, 1:].flatten(2)
    xc, yc = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    gain = (xc * yc).sum(-1) / (xc * xc).sum(-1)
    offset = y.mean(-1) - gain * x.mean(-1)
    assert torch.allclose(y, gain[..., None] * x + offset[..., None], atol=1e-4)
    assert gain.min() >= 0.8 - 1e-4 and gain.max() <= 1.2 + 1e-4
    assert offset.abs().max() <= 0.2 + 1e-4
    changed = (gain - 1).abs().amax(1) > 1e-6
    assert 0.6 < changed.float().mean() < 0.95  # p = 0.8
    assert (gain[changed].std(dim=1) > 0).all()  # bands differ


@pytest.mark.parametrize(('size', 'count'), [((16, 16), 8), ((12, 20), 4)])
def test_flip_rotate_gives_each_sample_one_of_the_flips_and_turns(size, count):
    torch.manual_seed(0)
    images = torch.randn(64, 3, *size)
    valid = torch.rand(64, *size) < 0.8
    masks = torch.randint(0, 5, (64, *size))

    out, out_valid, out_masks, _ = flip_rotate(images, valid, masks)

    def variants(x):
        """The flips and turns of an (..., H, W) tensor, same shape only."""
        turns = [f.rot90(k, dims=(-2, -1)) for f in (x, x.flip(-1)) for k in range(4)]
        return [v for v in turns if v.shape == x.shape]

    seen = set()
    for i in range(64):
        # The image, its valid mask and its class mask get the same transform.
        matches = [
            k
            for k, (a, b, c) in enumerate(
                zip(variants(images[i]), variants(valid[i]), variants(masks[i]))
            )
            if torch.equal(a, out[i])
            and torch.equal(b, out_valid[i])
            and torch.equal(c, out_masks[i])
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == count  # 8 on square images; 4 (no quarter turn) otherwise


@pytest.mark.parametrize('batched', [True, False])
def test_normalise_standardises_bands_and_zeroes_nodata_nan_and_infinities(batched):
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(4, 3, 8, 8, generator=generator) * 1000
    images[0, 1, 2, 3] = float('nan')
    images[1, 0, 0, 0] = float('inf')
    images[2, 2, 5, 5] = -float('inf')
    valid = torch.rand(4, 8, 8, generator=generator) > 0.2
    stats = BandStatistics(
        bands=('a', 'b', 'c'),
        mean=(100.0, 500.0, 900.0),
        std=(10.0, 200.0, 0.0),
        p02=(0.0,) * 3,
        p50=(0.0,) * 3,
        p98=(0.0,) * 3,
        pixels=256,
    )
    if not batched:
        images, valid = images[0], valid[0]
    out = normalise(images.clone(), valid, stats)
    mean = torch.tensor([100.0, 500.0, 900.0]).view(-1, 1, 1)
    std = torch.tensor([10.0, 200.0, 1e-6]).view(-1, 1, 1)
    expected = (images - mean) / std
    keep = valid.unsqueeze(-3) & expected.isfinite()
    assert torch.equal(out[keep], expected[keep])
    assert (out[~keep] == 0).all()
    assert out.isfinite().all()
    assert out.shape == images.shape


def objects_per_band(count: int, size: int, seed: int = 0):
    """Images with one rectangle per band (3 bands); sample 1 has none."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, 3, size, size)
    boxes, labels = [], []
    for i in range(count):
        sample = []
        for band in range(3 if i != 1 else 0):
            x0, y0 = torch.randint(0, size - 10, (2,), generator=generator).tolist()
            w, h = torch.randint(4, 10, (2,), generator=generator).tolist()
            images[i, band, y0 : y0 + h, x0 : x0 + w] = 1.0
            sample.append([x0, y0, x0 + w, y0 + h])
        boxes.append(torch.tensor(sample, dtype=torch.float32).view(-1, 4))
        labels.append(torch.arange(len(sample)))
    return images, boxes, labels


def test_batched_box_moves_follow_each_object_of_each_sample():
    images, boxes, labels = objects_per_band(24, 32, seed=5)
    valid = torch.ones(24, 32, 32, dtype=torch.bool)
    generator = torch.Generator().manual_seed(2)

    out, out_valid, out_boxes, out_labels = scale_crop(
        images, valid, boxes, labels, scale=(1.2, 2.0), generator=generator
    )
    out, out_valid, _, turned = flip_rotate(
        out, out_valid, boxes=out_boxes, generator=generator
    )

    assert turned is not None and len(turned) == len(out_labels) == 24
    assert len(turned[1]) == 0 and len(out_labels[1]) == 0
    dropped = 0
    for i in range(24):
        assert len(turned[i]) == len(out_labels[i])
        kept = set(out_labels[i].tolist())
        for box, band in zip(turned[i], out_labels[i].tolist(), strict=True):
            assert (box - box_of(out[i, band] > 0.5)).abs().max() <= 1.0
        for band in set(range(3 if i != 1 else 0)) - kept:
            dropped += 1
            # A dropped object shows less than half of its resized area.
            scaled = (boxes[i][band, 2:] - boxes[i][band, :2]).prod()
            assert (out[i, band] > 0.5).sum() < 0.5 * scaled * 2.0**2 + 8
    assert sum(len(b) for b in turned) > 23  # of 69
    assert dropped > 0, 'some objects were cropped away'
