"""Semantic segmentation: the encoder, BEiT's four-level pyramid and UperNet."""

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from .encoder import SensorEncoder
from .head_sizes import head_channels
from .heads import PYRAMID_SCALES, BlockPyramid, FCNHead, UperNetHead
from .task_base import TaskModelBase, TaskName, check_num_classes, check_pyramid_size

__all__ = ('Neck', 'SegmentationModel', 'default_out_indices', 'resolve_out_indices')

#: The pyramid's widths: ``'narrow'`` halves the channels at each 2x upsampling
#: (ViTDet's widths), ``'full'`` keeps the encoder's width at every level (BEiT).
Neck = Literal['narrow', 'full']


def default_out_indices(
    depth: int, shares: Sequence[float] = (1 / 3, 1 / 2, 2 / 3)
) -> list[int]:
    """Blocks that feed a four-level pyramid: at 1/3, 1/2, 2/3 of the depth and last.

    BEiT and MAE take blocks 4, 6, 8, 12 of ViT-B (3, 5, 7, 11 zero-based) and 8, 12,
    16, 24 of ViT-L; this rule gives those and spreads other depths alike.

    Args:
        depth: Number of encoder blocks.
        shares: Depths of the first three blocks, as shares of *depth*.

    Returns:
        Four zero-based block indices, non-decreasing.

    .. versionadded:: 0.1
    .. versionchanged:: 0.1
       Added *shares*.
    """
    return [max(round(depth * share) - 1, 0) for share in shares] + [depth - 1]


def resolve_out_indices(
    out_indices: Sequence[int] | None, depth: int, shares: Sequence[float] | None = None
) -> list[int]:
    """Four zero-based block indices: *out_indices* (negatives from the end) or the rule.

    Args:
        out_indices: Four block indices, or None for :func:`default_out_indices`.
        depth: Number of encoder blocks.
        shares: *shares* of :func:`default_out_indices`; None: its default.

    Returns:
        The indices, each in ``0 .. depth - 1``.

    Raises:
        ValueError: If there are not four indices of existing blocks.

    .. versionadded:: 0.1
    """
    indices = (
        (
            default_out_indices(depth)
            if shares is None
            else default_out_indices(depth, shares)
        )
        if out_indices is None
        else [i % depth if -depth <= i < depth else i for i in out_indices]
    )
    if len(indices) != len(PYRAMID_SCALES) or not all(0 <= i < depth for i in indices):
        raise ValueError(
            f'out_indices must be 4 block indices of the {depth} blocks, got '
            f'{out_indices}'
        )
    return indices


class SegmentationModel(TaskModelBase, nn.Module):
    """Semantic segmentation: encoder, BEiT's four-level pyramid and UperNet.

    The outputs of four blocks, each through the encoder's final norm (timm's
    ``forward_intermediates(norm=True)``; BEiT feeds them raw, the norm puts every
    level on one scale), are rescaled to strides ``p/4 .. 2p``
    (:class:`~dspt_geo.models.heads.BlockPyramid`) and decoded by UperNet (Xiao et
    al., ECCV 2018, https://arxiv.org/abs/1807.10221); the logits are upsampled
    bilinearly to the input size.

    BEiT's auxiliary FCN head (on the level at the patch stride, from the third
    block of *out_indices*) is not part of the model: it helps training only, so
    the fine-tuning task holds the one :meth:`auxiliary_head` builds and feeds it
    :meth:`forward_features`' level :attr:`AUX_LEVEL`; model files and prediction
    never see it.

    .. versionadded:: 0.1
    """

    #: The task name of :func:`~dspt_geo.models.tasks.build_task_model`.
    task: ClassVar[TaskName] = 'segment'

    #: Pyramid level of the auxiliary head: stride ``p``, as BEiT's ``in_index=2``.
    AUX_LEVEL: ClassVar[int] = 2

    def __init__(
        self,
        encoder: SensorEncoder,
        num_classes: int,
        *,
        out_indices: Sequence[int] | None = None,
        channels: int | None = None,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
        neck: Neck = 'narrow',
    ) -> None:
        """Initialise the segmentation model.

        Args:
            encoder: The encoder, with its weights.
            num_classes: Number of classes.
            out_indices: Four zero-based blocks that feed the pyramid, shallowest
                first; :func:`default_out_indices` when None.
            channels: Width of the UperNet decoder; None: from the encoder's
                width and depth, at most 512
                (:func:`~dspt_geo.models.head_sizes.head_channels`).
            pool_scales: Output sizes of UperNet's pyramid pooling.
            dropout: Dropout rate before the classifier.
            neck: The pyramid's widths (:class:`~dspt_geo.models.heads.BlockPyramid`):
                ``'narrow'`` (``D/4, D/2, D, D``, ViTDet's) or ``'full'``
                (``D`` at every level, BEiT's; model files of config version 2 and
                older).

        Raises:
            ValueError: If an option is invalid.

        .. versionchanged:: 0.1
           *channels* defaults to a width that follows the encoder (was 512).
        .. versionchanged:: 0.1
           Added *neck*, ``'narrow'`` by default (was ``'full'``).
        """
        super().__init__()
        check_num_classes(num_classes)
        depth = encoder.num_layers
        if channels is None:
            channels = head_channels(encoder.embed_dim, depth, cap=512)
        indices = resolve_out_indices(out_indices, depth)
        if neck not in ('narrow', 'full'):
            raise ValueError(f"neck must be 'narrow' or 'full', got {neck!r}")
        self.num_classes = num_classes
        self.out_indices = indices
        self.channels = channels
        self.pool_scales = [int(scale) for scale in pool_scales]
        self.dropout = dropout
        self.neck_kind: Neck = neck
        self.encoder = encoder
        self.neck = BlockPyramid(encoder.embed_dim, narrow=neck == 'narrow')
        self.decode_head = UperNetHead(
            self.neck.out_channels,
            channels,
            num_classes,
            pool_scales=self.pool_scales,
            dropout=dropout,
        )

    def forward_features(self, images: Tensor) -> list[Tensor]:
        """The four-level pyramid of images.

        Args:
            images: ``(B, C, H, W)``, H and W divisible by the patch size and at
                least twice the patch size.

        Returns:
            One map ``(B, embed_dim, h, w)`` per level, strides ``p/4 .. 2p``.
        """
        check_pyramid_size(images, self.encoder.patch_size)
        features = self.encoder.forward_intermediates(
            images, self.out_indices, norm=True
        )
        pyramid: list[Tensor] = self.neck(features)
        return pyramid

    def forward_head(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Decode a pyramid into logits of the given size.

        Args:
            features: From :meth:`forward_features`.
            size: ``(H, W)`` of the images.

        Returns:
            Logits ``(B, num_classes, H, W)``.
        """
        return F.interpolate(
            self.decode_head(features),
            size=tuple(size),
            mode='bilinear',
            align_corners=False,
        )

    def forward(self, images: Tensor) -> Tensor:
        """Segment images.

        Args:
            images: ``(B, C, H, W)``, H and W divisible by the patch size and at
                least twice the patch size.

        Returns:
            Logits ``(B, num_classes, H, W)``.
        """
        return self.forward_head(self.forward_features(images), images.shape[-2:])

    def auxiliary_head(self) -> FCNHead:
        """A new auxiliary FCN head for level :attr:`AUX_LEVEL`, for training.

        Half the decoder's width (256 beside UperNet's 512 in BEiT's configs).

        Returns:
            The head, with random weights.

        .. versionadded:: 0.1
        """
        return FCNHead(
            self.neck.out_channels[self.AUX_LEVEL],
            max(self.channels // 2, 8),
            self.num_classes,
            dropout=self.dropout,
        )

    def options(self) -> dict[str, Any]:
        """The head options (see :meth:`~dspt_geo.models.task_base.TaskModelBase.config`).

        Returns:
            ``out_indices``, ``channels``, ``pool_scales``, ``dropout`` and ``neck``.
        """
        return {
            'out_indices': list(self.out_indices),
            'channels': self.channels,
            'pool_scales': list(self.pool_scales),
            'dropout': self.dropout,
            'neck': self.neck_kind,
        }
