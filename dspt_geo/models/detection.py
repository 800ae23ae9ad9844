"""Object detection: torchvision's Faster R-CNN on ViTDet's simple feature pyramid."""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal, cast

from timm.layers.norm import LayerNorm2d
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.rpn import RPNHead

from .detection_glue import ROI_SIZE, Pyramid, TileTransform, ViTDetBackbone, roi_pool
from .encoder import SensorEncoder
from .head_sizes import box_representation_size, detection_sampling, head_channels
from .heads import PYRAMID_SCALES
from .task_base import TaskModelBase, TaskName, check_num_classes

__all__ = ('DetectionModel',)

#: Anchor side relative to the stride of its level (32 px at stride 4, as FPN).
_ANCHOR_PER_STRIDE = 8

#: Faster R-CNN arguments that ``detector_args`` may set; the others are ours.
_DETECTOR_ARGS = frozenset(
    {
        'rpn_pre_nms_top_n_train',
        'rpn_pre_nms_top_n_test',
        'rpn_post_nms_top_n_train',
        'rpn_post_nms_top_n_test',
        'rpn_nms_thresh',
        'rpn_fg_iou_thresh',
        'rpn_bg_iou_thresh',
        'rpn_batch_size_per_image',
        'rpn_positive_fraction',
        'rpn_score_thresh',
        'box_fg_iou_thresh',
        'box_bg_iou_thresh',
        'box_batch_size_per_image',
        'box_positive_fraction',
        'bbox_reg_weights',
    }
)


class DetectionModel(TaskModelBase, FasterRCNN):  # type: ignore[misc]  # torchvision is untyped
    """Object detection: Faster R-CNN on the encoder's simple feature pyramid.

    ViTDet (Li et al., ECCV 2022, https://arxiv.org/abs/2203.16527) with torchvision's
    Faster R-CNN (Ren et al., NeurIPS 2015, https://arxiv.org/abs/1506.01497): the
    backbone is :class:`ViTDetBackbone` (P2-P6), the RPN has two 3x3 convolutions
    and one anchor size per level (8 times its stride unless given) at three aspect
    ratios, RoIAlign pools 7x7 from P2-P5, and the box head is Fast R-CNN's two
    shared fully connected layers (``'2fc'``) or ViTDet's four convolutions with
    LayerNorm and one fully connected layer (``'4conv1fc'``). Widths and training-time
    sampling follow the encoder and the tile (:mod:`~dspt_geo.models.head_sizes`).

    Classes: *num_classes* object classes, labelled ``1 .. num_classes`` in the
    targets and in the detections; label 0 is torchvision's background, so class
    index ``i`` of a class list is label ``i + 1``.

    Images go in as they are: no normalisation (the data pipeline normalises), no
    resizing, any band count; a batch is padded to a multiple of the patch size.

    ``forward(images, targets)`` returns the losses in training mode (targets
    required) and the detections in eval mode, as torchvision's detectors.

    .. versionadded:: 0.1
    """

    #: The task name of :func:`~dspt_geo.models.tasks.build_task_model`.
    task: ClassVar[TaskName] = 'detect'

    #: Prefix of the encoder's parameters in ``named_parameters()``.
    encoder_prefix: ClassVar[str] = 'backbone.encoder.'

    def __init__(
        self,
        encoder: SensorEncoder,
        num_classes: int,
        *,
        out_channels: int | None = None,
        pyramid: Pyramid = 'last',
        out_indices: Sequence[int] | None = None,
        anchor_sizes: Sequence[float] | None = None,
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        box_head: Literal['4conv1fc', '2fc'] = '2fc',
        representation_size: int | None = None,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
        detector_args: Mapping[str, Any] | None = None,
    ) -> None:
        """Initialise the detector.

        Args:
            encoder: The encoder, with its weights.
            num_classes: Number of object classes, without the background.
            out_channels: Channels of the feature pyramid; None: from the
                encoder's width and depth, at most 256
                (:func:`~dspt_geo.models.head_sizes.head_channels`).
            pyramid: ``'last'``: ViTDet's simple pyramid from the last block;
                ``'multi'``: four blocks through an FPN, as the reference
                configs (:class:`~dspt_geo.models.detection_glue.ViTDetBackbone`).
            out_indices: ``'multi'``: the four blocks; None: at 1/4, 1/2, 3/4
                of the depth and the last.
            anchor_sizes: Anchor side in pixels for each of P2-P6; 8 times the level
                stride when None (32 to 512 for 16-pixel patches).
            aspect_ratios: Anchor aspect ratios (height / width), at every level.
            box_head: ``'2fc'`` (Fast R-CNN's two shared fully connected layers)
                or ``'4conv1fc'`` (ViTDet's, several times the cost on small tiles).
            representation_size: Width of the box head's fully connected layers;
                None: 4 per pyramid channel, at most 1024.
            score_thresh: Least score of a detection in eval mode.
            nms_thresh: IoU above which non-maximum suppression drops a detection.
            detections_per_image: Most detections per image.
            detector_args: Further torchvision ``FasterRCNN`` arguments for the RPN
                and box sampling (``rpn_*``, ``box_*_iou_thresh``,
                ``box_batch_size_per_image``, ``box_positive_fraction``,
                ``bbox_reg_weights``), JSON values; the training-time sampling
                not given follows the tile
                (:func:`~dspt_geo.models.head_sizes.detection_sampling`).

        Raises:
            ValueError: If an option is invalid.

        .. versionchanged:: 0.1
           *out_channels* and *representation_size* default to widths that follow
           the encoder (were 256 and 1024), *box_head* to ``'2fc'``, the sampled
           RoIs, anchors and proposals of training to the tile (were 512, 256,
           2000).
        """
        check_num_classes(num_classes)
        if out_channels is None:
            out_channels = head_channels(encoder.embed_dim, encoder.num_layers, cap=256)
        if representation_size is None:
            representation_size = box_representation_size(out_channels)
        size = encoder.spec.image_size if encoder.spec is not None else 224
        args = {**detection_sampling(size, 0), **dict(detector_args or {})}
        unknown = sorted(set(args) - _DETECTOR_ARGS)
        if unknown:
            raise ValueError(
                f'detector_args may not set {unknown}; allowed: {sorted(_DETECTOR_ARGS)}'
            )
        backbone = ViTDetBackbone(
            encoder, out_channels, pyramid=pyramid, out_indices=out_indices
        )
        levels = backbone.level_names
        sizes = (
            [_ANCHOR_PER_STRIDE * stride for stride in backbone.strides]
            if anchor_sizes is None
            else [float(size) for size in anchor_sizes]
        )
        if len(sizes) != len(levels):
            raise ValueError(
                f'anchor_sizes needs one size per level {list(levels)}, got {sizes}'
            )
        ratios = [float(ratio) for ratio in aspect_ratios]
        anchors = AnchorGenerator(
            sizes=tuple((size,) for size in sizes),
            aspect_ratios=(tuple(ratios),) * len(levels),
        )
        box_roi_pool = roi_pool(levels[: len(PYRAMID_SCALES)], encoder.patch_size)
        match box_head:
            case '4conv1fc':
                head: nn.Module = FastRCNNConvFCHead(
                    (out_channels, ROI_SIZE, ROI_SIZE),
                    [out_channels] * 4,
                    [representation_size],
                    norm_layer=LayerNorm2d,
                )
            case '2fc':
                head = TwoMLPHead(out_channels * ROI_SIZE**2, representation_size)
            case _:
                raise ValueError(
                    f"box_head must be '4conv1fc' or '2fc', got {box_head!r}"
                )
        super().__init__(
            backbone,
            num_classes=None,
            rpn_anchor_generator=anchors,
            rpn_head=RPNHead(out_channels, len(ratios), conv_depth=2),
            box_roi_pool=box_roi_pool,
            box_head=head,
            box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
            box_score_thresh=score_thresh,
            box_nms_thresh=nms_thresh,
            box_detections_per_img=detections_per_image,
            **args,
        )
        self.transform = TileTransform(
            min_size=size,
            max_size=size,
            image_mean=[0.0] * encoder.in_chans,
            image_std=[1.0] * encoder.in_chans,
            size_divisible=encoder.patch_size,
        )
        self.num_classes = num_classes
        self.out_channels = out_channels
        self.anchor_sizes = sizes
        self.aspect_ratios = ratios
        self.box_head_kind = box_head
        self.representation_size = representation_size
        self.detector_args = args

    @property
    def encoder(self) -> SensorEncoder:  # type: ignore[override]  # base: an attribute
        """The encoder, inside the backbone."""
        return cast(SensorEncoder, self.backbone.encoder)

    def forward(
        self,
        images: Tensor | list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Detect objects, or compute the training losses.

        Args:
            images: ``(B, C, H, W)`` or a list of ``(C, H, W)``, normalised.
            targets: In training mode, one dict per image with ``boxes`` ``(N, 4)``
                (``x1, y1, x2, y2`` in pixels, float) and ``labels`` ``(N,)`` (int64,
                ``1 .. num_classes``).

        Returns:
            Training mode: the losses ``loss_classifier``, ``loss_box_reg``,
            ``loss_objectness``, ``loss_rpn_box_reg``. Eval mode: one dict per image
            with ``boxes`` ``(K, 4)``, ``labels`` ``(K,)`` and ``scores`` ``(K,)``.

        Raises:
            ValueError: If a target label is outside ``1 .. num_classes``.
        """
        for target in targets or []:
            labels = target['labels']
            if labels.numel() and not 1 <= int(labels.min()) <= int(labels.max()) <= (
                self.num_classes
            ):
                raise ValueError(
                    f'target labels must be in 1..{self.num_classes} (0 is the '
                    f'background), got {sorted(set(labels.tolist()))}'
                )
        output: dict[str, Tensor] | list[dict[str, Tensor]] = super().forward(
            list(images), targets
        )
        return output

    @contextmanager
    def inference_limits(self, proposals: int, detections: int) -> Iterator[None]:
        """Run eval-mode forwards with fewer proposals and detections per image.

        The RPN keeps at most *proposals* boxes per level before its NMS and in
        all after it, and at most *detections* boxes per image are returned; each
        is capped at the model's own setting (``rpn_*_nms_top_n_test``,
        ``detections_per_image``), which comes back on exit. Whole-scene
        prediction sizes these to the window (issue 16).

        Args:
            proposals: Most proposals per image.
            detections: Most detections per image.

        Yields:
            Nothing; the limits hold inside the ``with`` block.

        .. versionadded:: 0.1
        """
        rpn, heads = self.rpn, self.roi_heads
        saved = (
            rpn._pre_nms_top_n['testing'],
            rpn._post_nms_top_n['testing'],
            heads.detections_per_img,
        )
        rpn._pre_nms_top_n['testing'] = min(saved[0], max(1, proposals))
        rpn._post_nms_top_n['testing'] = min(saved[1], max(1, proposals))
        heads.detections_per_img = min(saved[2], max(1, detections))
        try:
            yield
        finally:
            (
                rpn._pre_nms_top_n['testing'],
                rpn._post_nms_top_n['testing'],
                heads.detections_per_img,
            ) = saved

    def options(self) -> dict[str, Any]:
        """The head options (see :meth:`~dspt_geo.models.task_base.TaskModelBase.config`).

        The score threshold, NMS threshold and detections per image are read from
        the model, so changing ``roi_heads.score_thresh`` and the like is kept.

        Returns:
            The keyword arguments of :class:`DetectionModel` but the encoder and
            the number of classes.
        """
        backbone = self.backbone
        return {
            'out_channels': self.out_channels,
            'pyramid': backbone.pyramid_kind,
            **(
                {'out_indices': list(backbone.out_indices)}
                if backbone.pyramid_kind == 'multi'
                else {}
            ),
            'anchor_sizes': list(self.anchor_sizes),
            'aspect_ratios': list(self.aspect_ratios),
            'box_head': self.box_head_kind,
            'representation_size': self.representation_size,
            'score_thresh': float(self.roi_heads.score_thresh),
            'nms_thresh': float(self.roi_heads.nms_thresh),
            'detections_per_image': int(self.roi_heads.detections_per_img),
            'detector_args': dict(self.detector_args),
        }
