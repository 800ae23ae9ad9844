"""Classification augmentation on normalised batches, for any band count (issue 13).

MAE's fine-tuning recipe (He et al. 2022) augments RGB photographs with RandAugment,
random erasing and Mixup/CutMix. Colour operations (hue, saturation, solarise) assume
three visible bands, so here the photometric part is *band-safe*: every band gets its
own random gain and offset, in units of its standard deviation (the batch is already
standardised), and a random Gaussian blur acts on all bands alike; nothing mixes
bands, so it works for 13-band Sentinel-2, 2-band SAR or one panchromatic band.

* :class:`ClassifyAugmentation`: band jitter
  (:func:`~dspt_geo.data.transforms.band_jitter`, shared with segmentation), blur
  and random erasing of a batch, with kornia's batch augmentations where they
  exist (blur, erasing);
* :func:`mix_batch`: timm's batch-mode Mixup/CutMix with label smoothing, for any
  batch size, returning soft targets that sum to 1.
"""

import torch
from kornia.augmentation import RandomErasing, RandomGaussianBlur
from timm.data.mixup import cutmix_bbox_and_lam, mixup_target
from torch import Tensor, nn

from .transforms import band_jitter

__all__ = ('CUTMIX_ALPHA', 'MIXUP_ALPHA', 'ClassifyAugmentation', 'mix_batch')

#: Mixup and CutMix Beta parameters of the MAE/CSPT fine-tuning configs.
MIXUP_ALPHA = 0.8
CUTMIX_ALPHA = 1.0


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
            RandomGaussianBlur((5, 5), sigma=(0.1, 1.0), p=blur) if blur > 0 else None
        )
        self.erase = (
            RandomErasing(p=erase, scale=(0.02, 1 / 3), ratio=(0.3, 3.3), value=0.0)
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
