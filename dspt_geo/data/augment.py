"""Classification augmentation on normalised batches, for any band count (issue 13).

MAE's fine-tuning recipe (He et al. 2022) augments RGB photographs with RandAugment,
random erasing and Mixup/CutMix. Colour operations (hue, saturation, solarise) assume
three visible bands, so here the photometric part is *band-safe*: every band gets its
own random gain and offset, in units of its standard deviation (the batch is already
standardised), and a random Gaussian blur acts on all bands alike; nothing mixes
bands, so it works for 13-band Sentinel-2, 2-band SAR or one panchromatic band.

* :class:`ClassifyAugmentation`: band jitter
  (:func:`~dspt_geo.data.transforms.band_jitter`, shared with segmentation), blur
  and random erasing of a batch;
* :class:`RandomGaussianBlur` and :class:`RandomErasing`: kornia's augmentations
  of those names (their arguments, their ``forward_parameters`` and ``params``),
  done for the whole batch in a few tensor operations;
* :func:`mix_batch`: timm's batch-mode Mixup/CutMix with label smoothing, for any
  batch size, returning soft targets that sum to 1.

Why not kornia's own (issue 15): at the CPU fine-tune's batch (8 chips of 64 px,
3 bands) kornia 0.9's ``RandomGaussianBlur`` takes 1.3 ms per batch whether it
blurs one sample in five (``p=0.2``) or all of them, and ``RandomErasing``
(``p=0.25``) 0.54 ms: per-call overhead (parameter checks, per-sample dispatch), in a
52 ms training step. The classes here draw the same parameters, blur only the
chosen samples with shifted, weighted copies (a grouped convolution with per-sample
kernels was 5x slower on the CPU) and erase with one mask: 0.29 and 0.19-0.33 ms
(BENCHMARKS.md, issue 13's classification recipe).
"""

import math

import torch
import torch.nn.functional as F
from timm.data.mixup import cutmix_bbox_and_lam, mixup_target
from torch import Tensor, nn

from .transforms import band_jitter

__all__ = (
    'CUTMIX_ALPHA',
    'MIXUP_ALPHA',
    'ClassifyAugmentation',
    'RandomErasing',
    'RandomGaussianBlur',
    'gaussian_blur',
    'mix_batch',
)

#: Mixup and CutMix Beta parameters of the MAE/CSPT fine-tuning configs.
MIXUP_ALPHA = 0.8
CUTMIX_ALPHA = 1.0


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int = 5) -> Tensor:
    """Blur each sample of a batch with its own Gaussian, every band alike.

    kornia's ``gaussian_blur2d`` (separable, ``reflect`` padding, the kernel
    ``exp(-x^2 / 2 sigma^2)`` at integer offsets, normalised to sum 1) for the
    whole batch: per axis, the padded batch shifted by each offset and weighted by
    each sample's kernel. A handful of elementwise operations; a grouped
    convolution with per-sample kernels costs several times more on the CPU.

    Args:
        images: ``(B, C, H, W)`` batch; H and W larger than ``kernel_size // 2``.
        sigma: ``(B,)`` standard deviation of each sample's kernel, in pixels.
        kernel_size: odd side of the kernel.

    Returns:
        the blurred batch, same shape and dtype.

    .. versionadded:: 0.1
    """
    batch, _, height, width = images.shape
    half = kernel_size // 2
    offsets = torch.arange(-half, half + 1, device=images.device, dtype=images.dtype)
    sigma = sigma.to(images.device, images.dtype)
    kernel = torch.exp(-offsets.square() / (2 * sigma[:, None].square()))
    kernel = (kernel / kernel.sum(1, keepdim=True)).view(batch, kernel_size, 1, 1, 1)
    padded = F.pad(images, (half, half, half, half), 'reflect')
    rows = padded[..., :width] * kernel[:, 0]
    for j in range(1, kernel_size):
        rows.addcmul_(padded[..., j : j + width], kernel[:, j])
    out = rows[..., :height, :] * kernel[:, 0]
    for j in range(1, kernel_size):
        out.addcmul_(rows[..., j : j + height, :], kernel[:, j])
    return out


class RandomGaussianBlur(nn.Module):
    """kornia's ``RandomGaussianBlur`` for a batch: only the chosen samples blurred.

    Each sample is chosen with probability *p* and gets its own sigma, uniform in
    *sigma* (both axes alike, as kornia draws it); the chosen samples are blurred
    together by :func:`gaussian_blur`, the others are returned untouched.

    .. versionadded:: 0.1
    """

    def __init__(
        self, kernel_size: int, sigma: tuple[float, float], p: float = 0.5
    ) -> None:
        """Initialise the augmentation.

        Args:
            kernel_size: odd side of the kernel.
            sigma: range of the standard deviation, in pixels.
            p: probability that a sample is blurred.
        """
        super().__init__()
        self.kernel_size, self.sigma, self.p = kernel_size, sigma, p

    def forward_parameters(
        self, batch_shape: torch.Size, device: torch.device | None = None
    ) -> dict[str, Tensor]:
        """Draw ``batch_prob`` (B,) bool, whether each sample is blurred, and ``sigma`` (B,)."""
        draw = torch.rand(2, batch_shape[0], device=device)
        low, high = self.sigma
        return {'batch_prob': draw[0] < self.p, 'sigma': low + (high - low) * draw[1]}

    def forward(
        self, images: Tensor, params: dict[str, Tensor] | None = None
    ) -> Tensor:
        """Blur the chosen samples of ``(B, C, H, W)`` *images* (*params*: drawn if None)."""
        if params is None:
            params = self.forward_parameters(images.shape, images.device)
        chosen = params['batch_prob'].nonzero()[:, 0]
        if chosen.numel() == 0:  # one sync, and no work for a batch left as is
            return images
        blurred = gaussian_blur(
            images[chosen], params['sigma'][chosen], self.kernel_size
        )
        return images.index_copy(0, chosen, blurred)


class RandomErasing(nn.Module):
    """kornia's ``RandomErasing`` for a batch, in one masked fill.

    Each sample is chosen with probability *p*; its rectangle covers a share of the
    image uniform in *scale*, with an aspect ratio (height / width) log-uniform in
    *ratio* (timm's and torchvision's draw, as in MAE's recipe; kornia draws it
    uniform below 1 or above 1, half the time each). Sides are rounded and clamped
    to the image (kornia's rule; torchvision draws again instead), and the corner
    is uniform over the places where the rectangle fits. The rectangle is set to
    *value* in every band.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.02, 0.33),
        ratio: tuple[float, float] = (0.3, 3.3),
        value: float = 0.0,
        p: float = 0.5,
    ) -> None:
        """Initialise the augmentation.

        Args:
            scale: range of the rectangle's share of the image area.
            ratio: range of its aspect ratio, height / width.
            value: what the rectangle is set to.
            p: probability that a sample is erased.
        """
        super().__init__()
        self.scale, self.ratio, self.value, self.p = scale, ratio, value, p

    def forward_parameters(
        self, batch_shape: torch.Size, device: torch.device | None = None
    ) -> dict[str, Tensor]:
        """Draw the rectangles.

        Returns:
            ``batch_prob`` (B,) bool, whether each sample is erased, and its
            rectangle's ``xs``, ``ys``, ``widths`` and ``heights`` (B,) int64,
            in pixels.
        """
        height, width = batch_shape[-2:]
        draw = torch.rand(5, batch_shape[0], device=device)
        area = (
            height * width * (self.scale[0] + (self.scale[1] - self.scale[0]) * draw[1])
        )
        low, high = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(low + (high - low) * draw[2])
        heights = (area * aspect).sqrt().round().clamp(1, height)
        widths = (area / aspect).sqrt().round().clamp(1, width)
        return {
            'batch_prob': draw[0] < self.p,
            'xs': (draw[3] * (width - widths + 1)).floor().long(),
            'ys': (draw[4] * (height - heights + 1)).floor().long(),
            'widths': widths.long(),
            'heights': heights.long(),
        }

    def forward(
        self, images: Tensor, params: dict[str, Tensor] | None = None
    ) -> Tensor:
        """Erase a rectangle of the chosen samples of ``(B, C, H, W)`` *images*."""
        if params is None:
            params = self.forward_parameters(images.shape, images.device)
        height, width = images.shape[-2:]
        rows = torch.arange(height, device=images.device)
        cols = torch.arange(width, device=images.device)

        def span(start: Tensor, length: Tensor, positions: Tensor) -> Tensor:
            """(B, N) whether each position lies in each sample's span."""
            return (positions >= start[:, None]) & (
                positions < (start + length)[:, None]
            )

        in_rows = (
            span(params['ys'], params['heights'], rows) & params['batch_prob'][:, None]
        )
        inside = (
            in_rows[:, :, None] & span(params['xs'], params['widths'], cols)[:, None]
        )
        return images.masked_fill(inside[:, None], self.value)


class ClassifyAugmentation(nn.Module):
    """Band jitter, blur and random erasing of a standardised classification batch.

    Per sample, with probability *jitter*: each band is scaled by a gain drawn from
    ``1 +- gain`` and shifted by an offset drawn from ``+- offset`` (band standard
    deviations), a per-band brightness and contrast change that never mixes bands.
    With probability *blur*: a 5x5 Gaussian blur, sigma 0.1-1.0 pixels. With
    probability *erase*: one rectangle of 2-33 % of the chip (aspect 0.3-3.3) is
    set to 0, the band mean, as nodata is (MAE's random erasing, ``reprob`` 0.25).
    Nodata pixels stay 0 throughout. Shapes and dtype are kept.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        *,
        jitter: float = 0.8,
        gain: float = 0.2,
        offset: float = 0.2,
        blur: float = 0.2,
        erase: float = 0.25,
    ) -> None:
        """Initialise the augmentation.

        Args:
            jitter: probability of the per-band gain and offset (0: off).
            gain: largest relative change of a band's gain.
            offset: largest shift of a band, in its standard deviations.
            blur: probability of the Gaussian blur (0: off).
            erase: probability of random erasing (0: off).
        """
        super().__init__()
        self.jitter, self.gain, self.offset = jitter, gain, offset
        self.blur = (
            RandomGaussianBlur(5, sigma=(0.1, 1.0), p=blur) if blur > 0 else None
        )
        self.erase = (
            RandomErasing(scale=(0.02, 1 / 3), ratio=(0.3, 3.3), value=0.0, p=erase)
            if erase > 0
            else None
        )

    def forward(self, images: Tensor, valid: Tensor) -> Tensor:
        """Augment a batch.

        Args:
            images: ``(B, C, H, W)`` standardised images, any C.
            valid: ``(B, H, W)`` bool mask of valid pixels.

        Returns:
            the augmented images, same shape and dtype.
        """
        if self.jitter > 0:
            images = band_jitter(
                images, valid, p=self.jitter, gain=self.gain, offset=self.offset
            )
        if self.blur is not None:
            images = self.blur(images)
        if self.erase is not None:
            images = self.erase(images)
        return images.masked_fill(~valid.unsqueeze(1), 0.0)


def mix_batch(
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    switch_prob: float = 0.5,
    smoothing: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Mixup or CutMix a batch with its reverse, and its soft, smoothed targets.

    timm's ``Mixup`` in batch mode (one lambda per batch, sample ``i`` mixed with
    sample ``B - 1 - i``; CutMix with probability *switch_prob* when both are on,
    its lambda corrected to the box's area), without its even-batch requirement,
    so a run's last, odd batch mixes too. With both alphas 0 the images are kept
    and the targets are the labels one-hot with label smoothing (the true class
    ``1 - smoothing + smoothing / K``, the others ``smoothing / K``).

    Args:
        images: ``(B, C, H, W)`` batch, any C.
        labels: ``(B,)`` class indexes.
        num_classes: K, the number of classes.
        mixup_alpha: Beta parameter of Mixup's lambda (0: no Mixup).
        cutmix_alpha: Beta parameter of CutMix's lambda (0: no CutMix).
        switch_prob: chance of CutMix when both are on.
        smoothing: label smoothing.

    Returns:
        the mixed images (a new tensor) and targets ``(B, K)``, each row summing
        to 1.

    .. versionadded:: 0.1
    """
    lam = 1.0
    if mixup_alpha > 0 or cutmix_alpha > 0:
        cutmix = cutmix_alpha > 0 and (
            mixup_alpha <= 0 or float(torch.rand(())) < switch_prob
        )
        alpha = cutmix_alpha if cutmix else mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        partner = images.flip(0)
        if cutmix:
            (y0, y1, x0, x1), lam = cutmix_bbox_and_lam(images.shape, lam)
            images = images.clone()
            images[:, :, y0:y1, x0:x1] = partner[:, :, y0:y1, x0:x1]
        else:
            images = images * lam + partner * (1 - lam)
    return images, mixup_target(labels, num_classes, lam, smoothing)
