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

__all__ = ('normalise', 'random_resized_crop')


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

    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode='bilinear', align_corners=False)
    mask = F.grid_sample(
        valid[:, None].to(images.dtype), grid, mode='nearest', align_corners=False
    )
    return out, mask[:, 0] > 0.5
