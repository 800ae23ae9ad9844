"""Batch transforms that run on the training device: normalisation and augmentation.

Both take a whole batch ``(B, C, H, W)`` with its valid-pixel mask ``(B, H, W)``, so they
run once per batch on the GPU (Lightning's ``on_after_batch_transfer``), for any band
count.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .statistics import BandStatistics

__all__ = ('flip_rotate', 'normalise', 'random_resized_crop', 'scale_crop')


def normalise(images: Tensor, valid: Tensor, stats: BandStatistics) -> Tensor:
    """Standardise each band by the group's mean and std; invalid pixels become 0.

    Zero is the band mean after standardisation, so nodata carries no signal.

    Args:
        images: ``(B, C, H, W)`` raw values.
        valid: ``(B, H, W)`` bool mask of valid pixels.
        stats: the sensor group's statistics, one entry per band of *images*.

    Returns:
        the standardised batch.
    """
    mean = images.new_tensor(stats.mean).view(1, -1, 1, 1)
    std = images.new_tensor(stats.std).clamp_min(1e-6).view(1, -1, 1, 1)
    out = (images - mean) / std
    return torch.where(valid[:, None] & torch.isfinite(out), out, 0.0)


def random_resized_crop(
    images: Tensor,
    valid: Tensor,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flips: bool = True,
    rotations: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """MAE's augmentation, plus the 90-degree rotations that suit overhead imagery.

    Every sample gets its own crop (area fraction in *scale*, aspect ratio in
    *ratio*), resized back to the input size, then a random horizontal and vertical
    flip and a rotation by a multiple of 90 degrees. All of it is one affine
    resampling per batch (``grid_sample``): bilinear for images, nearest for masks.

    Args:
        images: ``(B, C, H, W)`` batch.
        valid: ``(B, H, W)`` bool mask.
        scale: range of the crop's share of the image area.
        ratio: range of the crop's aspect ratio (width / height).
        flips: random horizontal and vertical flips.
        rotations: random rotations by 0, 90, 180 or 270 degrees.
        generator: random generator (on the batch's device) for reproducibility.

    Returns:
        the augmented images and masks, same shapes.
    """
    batch = images.shape[0]
    device = images.device

    def uniform(low: float, high: float) -> Tensor:
        draw = torch.rand(batch, device=device, generator=generator)
        return low + (high - low) * draw

    area = uniform(*scale)
    aspect = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1])))
    # Half-widths of the crop in normalised coordinates ([-1, 1] spans the image).
    half_w = torch.sqrt(area * aspect).clamp(max=1.0)
    half_h = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = (1 - half_w) * uniform(-1.0, 1.0)
    centre_y = (1 - half_h) * uniform(-1.0, 1.0)

    sign_x = torch.ones(batch, device=device)
    sign_y = torch.ones(batch, device=device)
    if flips:
        sign_x = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)
        sign_y = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)
    quarter_turns = (
        torch.randint(0, 4, (batch,), device=device, generator=generator)
        if rotations
        else torch.zeros(batch, dtype=torch.long, device=device)
    )
    angle = quarter_turns.float() * (math.pi / 2)
    cos, sin = torch.cos(angle).round(), torch.sin(angle).round()

    # Output coordinates are rotated, flipped, then scaled and shifted into the crop.
    theta = torch.zeros(batch, 2, 3, device=device)
    theta[:, 0, 0] = half_w * cos * sign_x
    theta[:, 0, 1] = -half_w * sin * sign_y
    theta[:, 1, 0] = half_h * sin * sign_x
    theta[:, 1, 1] = half_h * cos * sign_y
    theta[:, 0, 2] = centre_x
    theta[:, 1, 2] = centre_y

    grid = F.affine_grid(
        theta.to(images.dtype), list(images.shape), align_corners=False
    )
    out = F.grid_sample(images, grid, mode='bilinear', align_corners=False)
    mask = F.grid_sample(
        valid[:, None].to(images.dtype), grid, mode='nearest', align_corners=False
    )
    return out, mask[:, 0] > 0.5


def flip_rotate(
    images: Tensor,
    valid: Tensor,
    masks: Tensor | None = None,
    boxes: list[Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, list[Tensor] | None]:
    """Random flips and 90-degree rotations per sample, for labelled batches.

    Every sample gets a random horizontal flip, vertical flip and rotation by
    0, 90, 180 or 270 degrees (overhead imagery has no up); its mask and boxes get
    the same. Rotations by 90 and 270 degrees need square images; other batches
    are only flipped and turned by 180 degrees.

    Args:
        images: ``(B, C, H, W)`` batch.
        valid: ``(B, H, W)`` bool mask of valid pixels.
        masks: ``(B, H, W)`` class masks, if any.
        boxes: per sample, ``(N, 4)`` boxes ``x0, y0, x1, y1`` in pixels, if any.
        generator: random generator (on the batch's device) for reproducibility.

    Returns:
        the images, valid masks, class masks and boxes, transformed alike.

    .. versionadded:: 0.1
    """
    batch, device = images.shape[0], images.device
    height, width = images.shape[-2:]
    flip_x = torch.rand(batch, device=device, generator=generator) < 0.5
    flip_y = torch.rand(batch, device=device, generator=generator) < 0.5
    turns = torch.randint(0, 4, (batch,), device=device, generator=generator)
    quarters: tuple[int, ...] = (1, 2, 3)
    if height != width:
        turns, quarters = (turns // 2) * 2, (2,)  # 0 or 180 degrees

    def apply(x: Tensor) -> Tensor:
        """Transform a batch whose last two dimensions are (H, W)."""
        shape = (batch,) + (1,) * (x.ndim - 1)
        x = torch.where(flip_x.view(shape), x.flip(-1), x)
        x = torch.where(flip_y.view(shape), x.flip(-2), x)
        for k in quarters:
            x = torch.where((turns == k).view(shape), x.rot90(k, dims=(-2, -1)), x)
        return x

    images, valid = apply(images), apply(valid)
    masks = apply(masks) if masks is not None else None
    if boxes is not None:
        moved = []
        for i, box in enumerate(boxes):
            box = box.clone()
            if flip_x[i]:
                box[:, [0, 2]] = width - box[:, [2, 0]]
            if flip_y[i]:
                box[:, [1, 3]] = height - box[:, [3, 1]]
            side, other = width, height
            for _ in range(int(turns[i])):
                # torch.rot90 turns counter-clockwise: (x, y) -> (y, W - x), and
                # the width becomes the height.
                box = torch.stack(
                    [box[:, 1], side - box[:, 2], box[:, 3], side - box[:, 0]], dim=1
                )
                side, other = other, side
            moved.append(box)
        boxes = moved
    return images, valid, masks, boxes


def scale_crop(
    images: Tensor,
    valid: Tensor,
    boxes: list[Tensor],
    labels: list[Tensor],
    scale: tuple[float, float] = (0.75, 1.33),
    min_visible: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
    """Scale jitter and random crops for detection, per sample.

    Each sample is resized by a random factor in *scale* (bilinear; the valid
    mask by nearest), then cropped at a random place to the input size, or padded
    with invalid zeros where it became smaller. Boxes are moved with it and clipped
    to the crop; boxes keeping less than *min_visible* of their area are dropped.

    Args:
        images: ``(B, C, H, W)`` normalised batch.
        valid: ``(B, H, W)`` bool mask of valid pixels.
        boxes: per sample, ``(N, 4)`` boxes ``x0, y0, x1, y1`` in pixels.
        labels: per sample, ``(N,)`` box labels.
        scale: range of the resize factor.
        min_visible: least share of a box's area left after cropping.
        generator: random generator (on the batch's device) for reproducibility.

    Returns:
        the images, valid masks, boxes and labels, same batch size and image size.

    .. versionadded:: 0.1
    """
    height, width = images.shape[-2:]
    device = images.device
    out_images, out_valid = torch.zeros_like(images), torch.zeros_like(valid)
    out_boxes, out_labels = [], []
    for i in range(images.shape[0]):
        factor = scale[0] + (scale[1] - scale[0]) * float(
            torch.rand(1, device=device, generator=generator)
        )
        new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
        image = F.interpolate(
            images[i : i + 1], size=(new_h, new_w), mode='bilinear', align_corners=False
        )[0]
        mask = F.interpolate(
            valid[i : i + 1, None].to(images.dtype), size=(new_h, new_w), mode='nearest'
        )[0, 0].bool()

        def offset(new: int, old: int) -> int:
            """Where the crop (new > old) or the paste (new < old) starts."""
            span = abs(new - old)
            draw = torch.randint(0, span + 1, (1,), device=device, generator=generator)
            return int(draw)

        dx, dy = offset(new_w, width), offset(new_h, height)
        # Source and target windows: crop when larger, paste when smaller.
        sx, tx = (dx, 0) if new_w >= width else (0, dx)
        sy, ty = (dy, 0) if new_h >= height else (0, dy)
        w, h = min(new_w, width), min(new_h, height)
        out_images[i, :, ty : ty + h, tx : tx + w] = image[:, sy : sy + h, sx : sx + w]
        out_valid[i, ty : ty + h, tx : tx + w] = mask[sy : sy + h, sx : sx + w]
        box = boxes[i].to(images.dtype) * images.new_tensor(
            [new_w / width, new_h / height, new_w / width, new_h / height]
        )
        box = box + images.new_tensor([tx - sx, ty - sy, tx - sx, ty - sy])
        area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
        clipped = torch.stack(
            [
                box[:, 0].clamp(tx, tx + w),
                box[:, 1].clamp(ty, ty + h),
                box[:, 2].clamp(tx, tx + w),
                box[:, 3].clamp(ty, ty + h),
            ],
            dim=1,
        )
        kept = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        keep = (kept >= min_visible * area.clamp_min(1e-6)) & (kept > 0)
        out_boxes.append(clipped[keep].to(boxes[i].dtype))
        out_labels.append(labels[i][keep])
    return out_images, out_valid, out_boxes, out_labels
