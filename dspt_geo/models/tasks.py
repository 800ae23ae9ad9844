"""Fine-tuning models: scene classification, segmentation and object detection.

Every model takes a :class:`~dspt_geo.models.encoder.SensorEncoder` and adds a head:

* :class:`ClassificationModel`: mean-pooled patch tokens (MAE's fine-tuning default)
  or the class token, then a linear classifier;
* :class:`SegmentationModel`: four encoder blocks rescaled to a pyramid
  (:class:`~dspt_geo.models.heads.BlockPyramid`, BEiT) and a UperNet decoder
  (:class:`~dspt_geo.models.heads.UperNetHead`);
* :class:`DetectionModel`: torchvision's Faster R-CNN on ViTDet's simple feature
  pyramid (:class:`ViTDetBackbone`).

Every model describes itself with :meth:`config` (plain JSON: the encoder's
:class:`~dspt_geo.models.encoder.EncoderSpec`, the number of classes and the head
options), and :func:`build_task_model_from_config` rebuilds it with random weights,
ready for ``load_state_dict``: a fine-tuned model file stores the state dict as
safetensors and the config as metadata, and loading it never unpickles.

Layer-wise learning-rate decay (BEiT, MAE fine-tuning): ``layer_id`` numbers every
parameter, 0 for the stem and class token, ``i + 1`` for block ``i``, and
``num_layers + 1`` for the final norm and the whole head; a group's learning rate is
``lr * decay ** (num_layers + 1 - layer_id)``.
"""

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal, TypeAlias, cast

import torch.nn.functional as F
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
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import initLevelMapper

from ..errors import CheckpointError
from .encoder import EncoderSpec, SensorEncoder
from .head_sizes import box_representation_size, detection_sampling, head_channels
from .heads import PYRAMID_SCALES, BlockPyramid, SimpleFeaturePyramid, UperNetHead

__all__ = (
    'CONFIG_VERSION',
    'ClassificationModel',
    'DetectionModel',
    'SegmentationModel',
    'TaskModel',
    'TaskName',
    'ViTDetBackbone',
    'build_task_model',
    'build_task_model_from_config',
    'default_out_indices',
)

#: The fine-tuning tasks.
TaskName: TypeAlias = Literal['classify', 'segment', 'detect']

#: Version of the layout of :meth:`ClassificationModel.config` and the others.
CONFIG_VERSION = 1

#: Side of the RoI features of the detection head, as Faster R-CNN.
_ROI_SIZE = 7

#: Anchor side relative to the stride of its level (32 px at stride 4, as FPN).
_ANCHOR_PER_STRIDE = 8

#: Level of the detection pyramid at the patch stride; ``p2`` is at ``patch / 4``.
_NATIVE_LEVEL = 4

#: Side of the box that RoIAlign pools from the native level, per pixel of patch:
#: FPN's 224-pixel box at stride 16, scaled with the stride for other patches.
_CANONICAL_BOX_PER_PATCH = 14

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


def _check_num_classes(num_classes: int) -> None:
    """Raise ValueError unless there is at least one class."""
    if num_classes < 1:
        raise ValueError(f'num_classes must be at least 1, got {num_classes}')


def _config(
    task: TaskName, encoder: SensorEncoder, num_classes: int, options: dict[str, Any]
) -> dict[str, Any]:
    """The JSON description of a task model."""
    if encoder.spec is None:
        raise ValueError(
            'the encoder has no spec, so the model cannot describe itself; build it '
            'with build_encoder or pass spec= to SensorEncoder.from_mae'
        )
    return {
        'config_version': CONFIG_VERSION,
        'task': task,
        'num_classes': num_classes,
        'encoder': encoder.spec.to_dict(),
        'options': options,
    }


def _check_pyramid_size(images: Tensor, patch_size: int) -> None:
    """Raise ValueError if images are too small for the level at stride ``2p``."""
    height, width = images.shape[-2:]
    if min(height, width) < 2 * patch_size:
        raise ValueError(
            f'images of {height}x{width} pixels are too small for the feature '
            f'pyramid: use at least {2 * patch_size} pixels (twice the patch size)'
        )


def _layer_id(encoder: SensorEncoder, prefix: str, name: str) -> int:
    """Layer id of a task-model parameter: the encoder's, or the top for the head."""
    if name.startswith(prefix):
        return encoder.layer_id(name.removeprefix(prefix))
    return encoder.num_layers + 1


class ClassificationModel(nn.Module):
    """Scene classifier: a pooled encoder feature and a linear layer.

    ``pool='mean'`` averages the patch tokens of the last block and normalises the
    average with the encoder's final norm, which so plays MAE's ``fc_norm`` (MAE
    fine-tuning's default, He et al. 2022, https://arxiv.org/abs/2111.06377, here
    starting from the pre-trained norm); ``pool='cls'`` takes the normalised class
    token. The classifier starts near zero (std 2e-5, as MAE fine-tuning).

    .. versionadded:: 0.1
    """

    #: The task name of :func:`build_task_model`.
    task: ClassVar[TaskName] = 'classify'

    def __init__(
        self,
        encoder: SensorEncoder,
        num_classes: int,
        *,
        pool: Literal['mean', 'cls'] = 'mean',
        drop_rate: float = 0.0,
    ) -> None:
        """Initialise the classifier.

        Args:
            encoder: The encoder, with its weights.
            num_classes: Number of classes.
            pool: How to pool the tokens, ``'mean'`` or ``'cls'``.
            drop_rate: Dropout before the classifier.

        Raises:
            ValueError: If an option is invalid.
        """
        super().__init__()
        _check_num_classes(num_classes)
        if pool not in ('mean', 'cls'):
            raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
        self.num_classes = num_classes
        self.pool = pool
        self.drop_rate = drop_rate
        self.encoder = encoder
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(encoder.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    @property
    def num_layers(self) -> int:
        """Number of encoder blocks."""
        return self.encoder.num_layers

    def forward_features(self, images: Tensor) -> Tensor:
        """Encode and pool images.

        Args:
            images: ``(B, C, H, W)``, H and W divisible by the patch size.

        Returns:
            Pooled features ``(B, embed_dim)``.
        """
        match self.pool:
            case 'mean':
                tokens = self.encoder(images, norm=False)
                pooled: Tensor = self.encoder.norm(tokens[:, 1:].mean(dim=1))
                return pooled
            case 'cls':
                cls_token: Tensor = self.encoder(images)[:, 0]
                return cls_token

    def forward_head(self, features: Tensor) -> Tensor:
        """Classify pooled features.

        Args:
            features: ``(B, embed_dim)`` from :meth:`forward_features`.

        Returns:
            Logits ``(B, num_classes)``.
        """
        logits: Tensor = self.head(self.head_drop(features))
        return logits

    def forward(self, images: Tensor) -> Tensor:
        """Classify images.

        Args:
            images: ``(B, C, H, W)``, H and W divisible by the patch size.

        Returns:
            Logits ``(B, num_classes)``.
        """
        return self.forward_head(self.forward_features(images))

    def layer_id(self, name: str) -> int:
        """Layer of a parameter for layer-wise learning-rate decay (see :mod:`.tasks`).

        Args:
            name: A name from ``named_parameters()``.

        Returns:
            The encoder's layer id, or ``num_layers + 1`` for the head.
        """
        return _layer_id(self.encoder, 'encoder.', name)

    def config(self) -> dict[str, Any]:
        """Describe the model in plain JSON (see :func:`build_task_model_from_config`).

        Returns:
            The config.

        Raises:
            ValueError: If the encoder has no spec.
        """
        return _config(
            self.task,
            self.encoder,
            self.num_classes,
            {'pool': self.pool, 'drop_rate': self.drop_rate},
        )


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


class SegmentationModel(nn.Module):
    """Semantic segmentation: encoder, BEiT's four-level pyramid and UperNet.

    The outputs of four blocks, each through the encoder's final norm (timm's
    ``forward_intermediates(norm=True)``; BEiT feeds them raw, the norm puts every
    level on one scale), are rescaled to strides ``p/4 .. 2p``
    (:class:`~dspt_geo.models.heads.BlockPyramid`) and decoded by UperNet (Xiao et
    al., ECCV 2018, https://arxiv.org/abs/1807.10221); the logits are upsampled
    bilinearly to the input size. BEiT's auxiliary FCN head is not included.

    .. versionadded:: 0.1
    """

    #: The task name of :func:`build_task_model`.
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
        _check_num_classes(num_classes)
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

    @property
    def num_layers(self) -> int:
        """Number of encoder blocks."""
        return self.encoder.num_layers

    def forward(self, images: Tensor) -> Tensor:
        """Segment images.

        Args:
            images: ``(B, C, H, W)``, H and W divisible by the patch size and at
                least twice the patch size.

        Returns:
            Logits ``(B, num_classes, H, W)``.
        """
        _check_pyramid_size(images, self.encoder.patch_size)
        features = self.encoder.forward_intermediates(
            images, self.out_indices, norm=True
        )
        logits = self.decode_head(self.neck(features))
        return F.interpolate(
            logits, size=images.shape[-2:], mode='bilinear', align_corners=False
        )

    def layer_id(self, name: str) -> int:
        """Layer of a parameter for layer-wise learning-rate decay (see :mod:`.tasks`).

        Args:
            name: A name from ``named_parameters()``.

        Returns:
            The encoder's layer id, or ``num_layers + 1`` for the neck and head.
        """
        return _layer_id(self.encoder, 'encoder.', name)

    def config(self) -> dict[str, Any]:
        """Describe the model in plain JSON (see :func:`build_task_model_from_config`).

        Returns:
            The config.

        Raises:
            ValueError: If the encoder has no spec.
        """
        return _config(
            self.task,
            self.encoder,
            self.num_classes,
            {
                'out_indices': list(self.out_indices),
                'channels': self.channels,
                'pool_scales': list(self.pool_scales),
                'dropout': self.dropout,
            },
        )


class ViTDetBackbone(nn.Module):
    """The encoder and ViTDet's simple feature pyramid, as a torchvision backbone.

    The last block's output, through the final norm, is turned into P2-P6 at strides
    ``p/4, p/2, p, 2p, 4p`` by :class:`~dspt_geo.models.heads.SimpleFeaturePyramid`.
    All blocks use global attention (ViTDet's window attention is not used).

    .. versionadded:: 0.1
    """

    #: Channels of every level (torchvision's backbone contract).
    out_channels: int

    def __init__(self, encoder: SensorEncoder, out_channels: int = 256) -> None:
        """Initialise the backbone.

        Args:
            encoder: The encoder, with its weights.
            out_channels: Channels of every pyramid level.
        """
        super().__init__()
        self.encoder = encoder
        self.pyramid = SimpleFeaturePyramid(encoder.embed_dim, out_channels)
        self.out_channels = out_channels

    @property
    def level_names(self) -> tuple[str, ...]:
        """Names of the levels, finest first."""
        return self.pyramid.level_names

    @property
    def strides(self) -> list[float]:
        """Stride of every level in pixels."""
        p = self.encoder.patch_size
        return [p / scale for scale in PYRAMID_SCALES] + [4.0 * p]

    def forward(self, images: Tensor) -> 'OrderedDict[str, Tensor]':
        """Compute the pyramid.

        Args:
            images: ``(B, C, H, W)``, H and W divisible by the patch size and at
                least twice the patch size.

        Returns:
            The levels by name.
        """
        _check_pyramid_size(images, self.encoder.patch_size)
        (x,) = self.encoder.forward_intermediates(images, [-1], norm=True)
        return OrderedDict(zip(self.level_names, self.pyramid(x), strict=True))


class _TileTransform(GeneralizedRCNNTransform):  # type: ignore[misc]  # torchvision is untyped
    """torchvision's detection transform without normalisation and resizing.

    dspt-geo normalises the bands itself and keeps the ground sampling distance, so
    images pass through as they are (any band count, any size); they are only
    padded to a multiple of the patch size when batched.
    """

    def normalize(self, image: Tensor) -> Tensor:
        """Return the image unchanged (it is already normalised)."""
        if not image.is_floating_point():
            raise TypeError(f'images must be floating point, got {image.dtype}')
        return image

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """Return the image and its target unchanged (no rescaling of tiles)."""
        return image, target


class DetectionModel(FasterRCNN):  # type: ignore[misc]  # torchvision is untyped
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

    #: The task name of :func:`build_task_model`.
    task: ClassVar[TaskName] = 'detect'

    def __init__(
        self,
        encoder: SensorEncoder,
        num_classes: int,
        *,
        out_channels: int | None = None,
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
        _check_num_classes(num_classes)
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
        backbone = ViTDetBackbone(encoder, out_channels)
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
        roi_pool = _roi_pool(levels[: len(PYRAMID_SCALES)], encoder.patch_size)
        match box_head:
            case '4conv1fc':
                head: nn.Module = FastRCNNConvFCHead(
                    (out_channels, _ROI_SIZE, _ROI_SIZE),
                    [out_channels] * 4,
                    [representation_size],
                    norm_layer=LayerNorm2d,
                )
            case '2fc':
                head = TwoMLPHead(out_channels * _ROI_SIZE**2, representation_size)
            case _:
                raise ValueError(
                    f"box_head must be '4conv1fc' or '2fc', got {box_head!r}"
                )
        super().__init__(
            backbone,
            num_classes=None,
            rpn_anchor_generator=anchors,
            rpn_head=RPNHead(out_channels, len(ratios), conv_depth=2),
            box_roi_pool=roi_pool,
            box_head=head,
            box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
            box_score_thresh=score_thresh,
            box_nms_thresh=nms_thresh,
            box_detections_per_img=detections_per_image,
            **args,
        )
        self.transform = _TileTransform(
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
    def encoder(self) -> SensorEncoder:
        """The encoder, inside the backbone."""
        return cast(SensorEncoder, self.backbone.encoder)

    @property
    def num_layers(self) -> int:
        """Number of encoder blocks."""
        return self.encoder.num_layers

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

    def layer_id(self, name: str) -> int:
        """Layer of a parameter for layer-wise learning-rate decay (see :mod:`.tasks`).

        Args:
            name: A name from ``named_parameters()``.

        Returns:
            The encoder's layer id, or ``num_layers + 1`` for everything else.
        """
        return _layer_id(self.encoder, 'backbone.encoder.', name)

    def config(self) -> dict[str, Any]:
        """Describe the model in plain JSON (see :func:`build_task_model_from_config`).

        The score threshold, NMS threshold and detections per image are read from
        the model, so changing ``roi_heads.score_thresh`` and the like is kept.

        Returns:
            The config.

        Raises:
            ValueError: If the encoder has no spec.
        """
        return _config(
            self.task,
            self.encoder,
            self.num_classes,
            {
                'out_channels': self.out_channels,
                'anchor_sizes': list(self.anchor_sizes),
                'aspect_ratios': list(self.aspect_ratios),
                'box_head': self.box_head_kind,
                'representation_size': self.representation_size,
                'score_thresh': float(self.roi_heads.score_thresh),
                'nms_thresh': float(self.roi_heads.nms_thresh),
                'detections_per_image': int(self.roi_heads.detections_per_img),
                'detector_args': dict(self.detector_args),
            },
        )


def _roi_pool(levels: Sequence[str], patch_size: int) -> MultiScaleRoIAlign:
    """RoIAlign over P2-P5 with their exact scales.

    torchvision infers the scales from the first batch, rounded to powers of two,
    which is wrong for patches such as 14 pixels; here they are set from the
    strides. Levels are numbered as in FPN (P4 at the patch stride), and a box of
    14 patches' side is pooled from P4, as FPN pools a 224-pixel box from stride 16.
    """
    pool = MultiScaleRoIAlign(
        featmap_names=list(levels), output_size=_ROI_SIZE, sampling_ratio=2
    )
    pool.scales = [scale / patch_size for scale in PYRAMID_SCALES]
    first = _NATIVE_LEVEL - 2
    pool.map_levels = initLevelMapper(
        first,
        first + len(levels) - 1,
        canonical_scale=_CANONICAL_BOX_PER_PATCH * patch_size,
        canonical_level=_NATIVE_LEVEL,
    )
    return pool


#: Any of the task models.
TaskModel: TypeAlias = ClassificationModel | SegmentationModel | DetectionModel


def build_task_model(
    task: TaskName, encoder: SensorEncoder, num_classes: int, **options: Any
) -> TaskModel:
    """Build the model of a fine-tuning task around an encoder.

    Args:
        task: ``'classify'``, ``'segment'`` or ``'detect'``.
        encoder: The encoder, e.g. from :func:`~dspt_geo.models.build_encoder`.
        num_classes: Number of classes (for detection, without the background).
        **options: Keyword arguments of the task's model class.

    Returns:
        The model.

    Raises:
        ValueError: If the task or an option is unknown or invalid.

    .. versionadded:: 0.1
    """
    try:
        match task:
            case 'classify':
                return ClassificationModel(encoder, num_classes, **options)
            case 'segment':
                return SegmentationModel(encoder, num_classes, **options)
            case 'detect':
                return DetectionModel(encoder, num_classes, **options)
            case _:
                raise ValueError(
                    f"unknown task {task!r}; use 'classify', 'segment' or 'detect'"
                )
    except TypeError as error:  # an unknown option
        raise ValueError(f'invalid options for task {task!r}: {error}') from error


def build_task_model_from_config(config: Mapping[str, Any]) -> TaskModel:
    """Rebuild a task model, with random weights, from its :meth:`config`.

    Load the trained weights afterwards with ``load_state_dict(state, strict=True)``.

    Config layout (JSON)::

        {
          "config_version": 1,
          "task": "classify" | "segment" | "detect",
          "num_classes": int,
          "encoder": {"model": str, "in_chans": int, "image_size": int,
                      "patch_size": int, "drop_path_rate": float,
                      "model_args": {...}, "sensor": str, "bands": [str] | null},
          "options": {...}   # keyword arguments of the task's model class
        }

    Args:
        config: The config, e.g. from a model file's metadata.

    Returns:
        The model, in training mode as any new module.

    Raises:
        CheckpointError: If the config is malformed, newer than this code, or
            describes a model that cannot be built.

    .. versionadded:: 0.1
    """
    version = config.get('config_version')
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise CheckpointError(
            f'task model config version {version!r} is not one this dspt-geo reads '
            f'(up to {CONFIG_VERSION}); update dspt-geo'
        )
    missing = sorted({'task', 'num_classes', 'encoder', 'options'} - set(config))
    if missing:
        raise CheckpointError(f'task model config lacks {missing}: {dict(config)}')
    try:
        encoder = SensorEncoder.from_spec(EncoderSpec.from_dict(config['encoder']))
        return build_task_model(
            config['task'], encoder, config['num_classes'], **config['options']
        )
    except ValueError as error:
        raise CheckpointError(f'invalid task model config: {error}') from error
