"""Semantic segmentation: the encoder, BEiT's four-level pyramid and UperNet."""

from collections.abc import Sequence
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from .encoder import SensorEncoder
from .head_sizes import head_channels
from .heads import PYRAMID_SCALES, BlockPyramid, UperNetHead
from .task_base import TaskModelBase, TaskName, check_num_classes, check_pyramid_size

__all__ = ('SegmentationModel', 'default_out_indices')


def default_out_indices(depth: int) -> list[int]:
    """Blocks that feed a four-level pyramid: at 1/3, 1/2, 2/3 of the depth and last.

    BEiT and MAE take blocks 4, 6, 8, 12 of ViT-B (3, 5, 7, 11 zero-based) and 8, 12,
    16, 24 of ViT-L; this rule gives those and spreads other depths alike.

    Args:
        depth: Number of encoder blocks.

    Returns:
        Four zero-based block indices, non-decreasing.

    .. versionadded:: 0.1
    """
    return [max(round(depth * share) - 1, 0) for share in (1 / 3, 1 / 2, 2 / 3)] + [
        depth - 1
    ]


class SegmentationModel(TaskModelBase, nn.Module):
    """Semantic segmentation: encoder, BEiT's four-level pyramid and UperNet.

    The outputs of four blocks, each through the encoder's final norm (timm's
    ``forward_intermediates(norm=True)``; BEiT feeds them raw, the norm puts every
    level on one scale), are rescaled to strides ``p/4 .. 2p``
    (:class:`~dspt_geo.models.heads.BlockPyramid`) and decoded by UperNet (Xiao et
    al., ECCV 2018, https://arxiv.org/abs/1807.10221); the logits are upsampled
    bilinearly to the input size. BEiT's auxiliary FCN head is not included.

    .. versionadded:: 0.1
    """

    #: The task name of :func:`~dspt_geo.models.tasks.build_task_model`.
    task: ClassVar[TaskName] = 'segment'

    def __init__(
        self,
        encoder: SensorEncoder,
        num_classes: int,
        *,
        out_indices: Sequence[int] | None = None,
        channels: int | None = None,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
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

        Raises:
            ValueError: If an option is invalid.

        .. versionchanged:: 0.1
           *channels* defaults to a width that follows the encoder (was 512).
        """
        super().__init__()
        check_num_classes(num_classes)
        depth = encoder.num_layers
        if channels is None:
            channels = head_channels(encoder.embed_dim, depth, cap=512)
        indices = (
            default_out_indices(depth)
            if out_indices is None
            else [i % depth if -depth <= i < depth else i for i in out_indices]
        )
        if len(indices) != len(PYRAMID_SCALES) or not all(
            0 <= i < depth for i in indices
        ):
            raise ValueError(
                f'out_indices must be 4 block indices of the {depth} blocks, got '
                f'{out_indices}'
            )
        self.num_classes = num_classes
        self.out_indices = indices
        self.channels = channels
        self.pool_scales = [int(scale) for scale in pool_scales]
        self.dropout = dropout
        self.encoder = encoder
        self.neck = BlockPyramid(encoder.embed_dim)
        self.decode_head = UperNetHead(
            [encoder.embed_dim] * len(PYRAMID_SCALES),
            channels,
            num_classes,
            pool_scales=self.pool_scales,
            dropout=dropout,
        )

    def forward(self, images: Tensor) -> Tensor:
        """Segment images.

        Args:
            images: ``(B, C, H, W)``, H and W divisible by the patch size and at
                least twice the patch size.

        Returns:
            Logits ``(B, num_classes, H, W)``.
        """
        check_pyramid_size(images, self.encoder.patch_size)
        features = self.encoder.forward_intermediates(
            images, self.out_indices, norm=True
        )
        logits = self.decode_head(self.neck(features))
        return F.interpolate(
            logits, size=images.shape[-2:], mode='bilinear', align_corners=False
        )

    def options(self) -> dict[str, Any]:
        """The head options (see :meth:`~dspt_geo.models.task_base.TaskModelBase.config`).

        Returns:
            ``out_indices``, ``channels``, ``pool_scales`` and ``dropout``.
        """
        return {
            'out_indices': list(self.out_indices),
            'channels': self.channels,
            'pool_scales': list(self.pool_scales),
            'dropout': self.dropout,
        }
