"""Necks and heads that turn ViT feature maps into dense predictions.

A plain ViT has one resolution, ``1 / patch_size``. Dense tasks need a pyramid:

* :class:`BlockPyramid` rescales the outputs of four blocks to strides 4, 8, 16 and
  32 (for 16-pixel patches), as BEiT and MAE do for semantic segmentation (Bao et
  al., "BEiT: BERT Pre-Training of Image Transformers", ICLR 2022,
  https://arxiv.org/abs/2106.08254);
* :class:`SimpleFeaturePyramid` builds P2-P6 from the last block alone, as ViTDet
  (Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection",
  ECCV 2022, https://arxiv.org/abs/2203.16527);
* :class:`UperNetHead` decodes a four-level pyramid into class logits (Xiao et al.,
  "Unified Perceptual Parsing for Scene Understanding", ECCV 2018,
  https://arxiv.org/abs/1807.10221), after mmsegmentation's ``UPerHead``;
* :class:`FCNHead` classifies one level, the auxiliary head of the UperNet recipe
  (mmsegmentation's ``FCNHead``).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers.norm import LayerNorm2d
from torch import Tensor, nn

__all__ = (
    'BlockPyramid',
    'FCNHead',
    'PyramidPooling',
    'SimpleFeaturePyramid',
    'UperNetHead',
)

#: Rescaling factors of the four pyramid levels relative to the ViT's map.
PYRAMID_SCALES = (4.0, 2.0, 1.0, 0.5)


def _conv_bn_relu(in_chans: int, out_chans: int, kernel_size: int) -> nn.Sequential:
    """Convolution, batch norm and ReLU, mmsegmentation's ``ConvModule``."""
    return nn.Sequential(
        nn.Conv2d(
            in_chans, out_chans, kernel_size, padding=kernel_size // 2, bias=False
        ),
        nn.BatchNorm2d(out_chans),
        nn.ReLU(inplace=True),
    )


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize to *size*, a no-op when the size already fits."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=False)


class BlockPyramid(nn.Module):
    """Rescale four ViT feature maps to strides ``p/4, p/2, p, 2p`` (BEiT's FPN).

    Level 1: two 2x transposed convolutions with batch norm and GELU between them;
    level 2: one 2x transposed convolution; level 3: identity; level 4: 2x2 max
    pooling. BEiT keeps ``embed_dim`` channels at every level; *narrow* halves the
    channels at each 2x upsampling instead, as ViTDet's simple pyramid does
    (``D/4, D/2, D, D``): the upsampling then costs about a quarter (on a tiny ViT
    at 64 px the full-width neck took over a third of the encoder's own step,
    issue 15).

    .. versionadded:: 0.1
    .. versionchanged:: 0.1
       Added *narrow*.
    """

    #: Channels of the four output levels, finest first.
    out_channels: list[int]

    def __init__(self, embed_dim: int, narrow: bool = False) -> None:
        """Initialise the rescaling layers.

        Args:
            embed_dim: Channels of the ViT maps.
            narrow: Halve the channels at each 2x upsampling (ViTDet's widths).
        """
        super().__init__()
        self.embed_dim = embed_dim
        half = embed_dim // 2 if narrow else embed_dim
        quarter = embed_dim // 4 if narrow else embed_dim
        self.out_channels = [quarter, half, embed_dim, embed_dim]
        self.fpn1 = nn.Sequential(
            nn.ConvTranspose2d(embed_dim, half, kernel_size=2, stride=2),
            nn.BatchNorm2d(half),
            nn.GELU(),
            nn.ConvTranspose2d(half, quarter, kernel_size=2, stride=2),
        )
        self.fpn2 = nn.ConvTranspose2d(embed_dim, half, kernel_size=2, stride=2)
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Rescale the maps.

        Args:
            features: Four maps ``(B, D, h, w)``, shallowest block first.

        Returns:
            Four maps ``(B, c, 4h, 4w)``, ``(B, c, 2h, 2w)``, ``(B, D, h, w)``,
            ``(B, D, h // 2, w // 2)``, with the channels of :attr:`out_channels`.

        Raises:
            ValueError: If not four maps are given.
        """
        if len(features) != len(PYRAMID_SCALES):
            raise ValueError(f'BlockPyramid takes 4 feature maps, got {len(features)}')
        ops = (self.fpn1, self.fpn2, self.fpn3, self.fpn4)
        return [op(x) for op, x in zip(ops, features, strict=True)]


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid: P2-P5 from one map, P6 by subsampling.

    From the map at stride ``p``: 4x by two transposed convolutions (to ``D/2`` then
    ``D/4`` channels, LayerNorm and GELU between), 2x by one (to ``D/2``), 1x as is,
    0.5x by 2x2 max pooling; each then goes through a 1x1 and a 3x3 convolution to
    *out_channels*, each followed by a channel LayerNorm. P6 is P5 subsampled by 2
    (``LastLevelMaxPool`` of Detectron2), for the largest RPN anchors.

    .. versionadded:: 0.1
    """

    #: Channels of every output level.
    out_channels: int
    #: Names of the output levels, finest first.
    level_names: tuple[str, ...]

    def __init__(
        self, embed_dim: int, out_channels: int = 256, *, top_block: bool = True
    ) -> None:
        """Initialise the pyramid.

        Args:
            embed_dim: Channels of the ViT map, divisible by 4.
            out_channels: Channels of every output level.
            top_block: Add P6.

        Raises:
            ValueError: If *embed_dim* is not divisible by 4.
        """
        super().__init__()
        if embed_dim % 4:
            raise ValueError(f'embed_dim must be divisible by 4, got {embed_dim}')
        self.out_channels = out_channels
        self.top_block = top_block
        self.level_names = ('p2', 'p3', 'p4', 'p5', *(('p6',) if top_block else ()))
        stages = []
        for scale in PYRAMID_SCALES:
            layers: list[nn.Module]
            dim = embed_dim
            if scale == 4.0:
                layers = [
                    nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
                    LayerNorm2d(dim // 2),
                    nn.GELU(),
                    nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
                ]
                dim //= 4
            elif scale == 2.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)]
                dim //= 2
            elif scale == 1.0:
                layers = []
            else:
                layers = [nn.MaxPool2d(kernel_size=2, stride=2)]
            layers += [
                nn.Conv2d(dim, out_channels, kernel_size=1, bias=False),
                LayerNorm2d(out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                LayerNorm2d(out_channels),
            ]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Build the pyramid.

        Args:
            x: The ViT map ``(B, D, h, w)``, with h and w at least 2.

        Returns:
            One map per level in :attr:`level_names`, ``(B, out_channels, 4h, 4w)``
            down to ``(B, out_channels, ceil(h / 4), ceil(w / 4))`` for P6.
        """
        levels = [stage(x) for stage in self.stages]
        if self.top_block:
            levels.append(F.max_pool2d(levels[-1], kernel_size=1, stride=2))
        return levels


class PyramidPooling(nn.Module):
    """Pyramid pooling module (Zhao et al., PSPNet, CVPR 2017), as UperNet uses it.

    .. versionadded:: 0.1
    """

    def __init__(
        self, in_chans: int, channels: int, pool_scales: Sequence[int] = (1, 2, 3, 6)
    ) -> None:
        """Initialise one pooling branch per scale.

        Args:
            in_chans: Channels of the input map.
            channels: Channels of every branch.
            pool_scales: Output sizes of the adaptive average pooling.
        """
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(scale), _conv_bn_relu(in_chans, channels, 1)
            )
            for scale in pool_scales
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Pool at every scale and upsample back.

        Args:
            x: ``(B, in_chans, h, w)``.

        Returns:
            One map ``(B, channels, h, w)`` per scale.
        """
        return [_resize(branch(x), x.shape[-2:]) for branch in self.branches]


class UperNetHead(nn.Module):
    """UperNet decoder: pyramid pooling on the top level, FPN, fusion of all levels.

    Batch norm throughout, as mmsegmentation's ``UPerHead``; training needs at least
    two images per batch (the 1x1 pooling branch), and multi-GPU training should
    synchronise the statistics (``nn.SyncBatchNorm.convert_sync_batchnorm``).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int,
        num_classes: int,
        *,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        """Initialise the decoder.

        Args:
            in_channels: Channels of every input level, finest first.
            channels: Width of the decoder.
            num_classes: Number of output classes.
            pool_scales: Output sizes of the pyramid pooling.
            dropout: Dropout rate before the classifier.
        """
        super().__init__()
        top = in_channels[-1]
        self.ppm = PyramidPooling(top, channels, pool_scales)
        self.ppm_bottleneck = _conv_bn_relu(
            top + len(pool_scales) * channels, channels, 3
        )
        self.lateral_convs = nn.ModuleList(
            _conv_bn_relu(chans, channels, 1) for chans in in_channels[:-1]
        )
        self.fpn_convs = nn.ModuleList(
            _conv_bn_relu(channels, channels, 3) for _ in in_channels[:-1]
        )
        self.fpn_bottleneck = _conv_bn_relu(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        if self.classifier.bias is not None:
            nn.init.zeros_(self.classifier.bias)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Decode a pyramid.

        Args:
            features: One map per level, finest first, channels as *in_channels*.

        Returns:
            Logits ``(B, num_classes, h, w)`` at the finest level's resolution.
        """
        top = features[-1]
        laterals = [
            conv(x) for conv, x in zip(self.lateral_convs, features, strict=False)
        ]
        laterals.append(self.ppm_bottleneck(torch.cat([top, *self.ppm(top)], dim=1)))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(
                laterals[i], laterals[i - 1].shape[-2:]
            )
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals, strict=False)]
        outs.append(laterals[-1])
        size = outs[0].shape[-2:]
        fused = self.fpn_bottleneck(torch.cat([_resize(x, size) for x in outs], dim=1))
        logits: Tensor = self.classifier(self.dropout(fused))
        return logits


class FCNHead(nn.Module):
    """One 3x3 convolution with batch norm and ReLU, dropout and a 1x1 classifier.

    mmsegmentation's ``FCNHead`` with one convolution and no input concatenation:
    the auxiliary head that BEiT's and MAE's UperNet configs put on the pyramid
    level at the patch stride, its loss weighted 0.4, used in training only.

    .. versionadded:: 0.1
    """

    def __init__(
        self, in_chans: int, channels: int, num_classes: int, *, dropout: float = 0.1
    ) -> None:
        """Initialise the head.

        Args:
            in_chans: Channels of the input map.
            channels: Width of the convolution.
            num_classes: Number of output classes.
            dropout: Dropout rate before the classifier.
        """
        super().__init__()
        self.conv = _conv_bn_relu(in_chans, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        if self.classifier.bias is not None:
            nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Classify every position of a map.

        Args:
            x: ``(B, in_chans, h, w)``.

        Returns:
            Logits ``(B, num_classes, h, w)``.
        """
        logits: Tensor = self.classifier(self.dropout(self.conv(x)))
        return logits
