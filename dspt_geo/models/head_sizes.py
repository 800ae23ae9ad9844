"""Default head sizes that follow the encoder and the tile, not ViT-B on a GPU.

The reference heads are sized for ViT-B on 512-1024 px crops: UperNet 512 channels
(mmsegmentation), ViTDet's 256-channel pyramid, a box head of width 1024 on 512
sampled RoIs and 256 sampled anchors per image (Detectron2, torchvision). On a tiny
ViT and a 64 px tile they cost 10-100 times the encoder (issue 15). The rules here
keep the head's cost near the encoder's and the sampling near the tile's content.

Width. The dense heads work at stride ``p / 4`` (16 positions per encoder token) and
spend about ``k C^2`` multiply-adds per token for C channels, k about 500-700
(UperNet's fusion and FPN convolutions; ViTDet's pyramid and the RPN's two
convolutions); the encoder spends about ``12 depth D^2``. The rule::

    channels = D * sqrt(depth / 192), a multiple of 8, between 32 and the cap

keeps the dense head near a quarter of the encoder's multiply-adds, leaving room
for what does not scale with C (the rescaling neck at up to the encoder's width,
RoIAlign, the losses), so that the whole training step costs at most twice the
encoder's own (``benchmarks/finetune.py``, BENCHMARKS.md: equal costs,
``depth / 48``, ran at 0.3-0.45 of the encoder's speed on a tiny ViT at 64 px,
``depth / 128`` at 0.43-0.48). The cap is 512 for UperNet and 256 for the
detector's pyramid (ViTDet's width for ViT-B). ViT-B/16 (768, 12 blocks): 192;
ViT-L (1024, 24): 360 and 256; a tiny ViT (192, 6 blocks): 32.

Box head. Fast R-CNN's two shared fully connected layers (``2fc``, torchvision's
``TwoMLPHead``, Detectron2's ``FastRCNNConvFCHead`` with ``NUM_FC=2``), of width 4
times the pyramid's channels, at most 1024 (the reference's width at 256 channels).

Sampling, per training image, from the tile area A (pixels) and the most objects
N seen in a training tile::

    RoIs      = clamp(max(2 N, 512 A / 1024^2), 8, 512)
    anchors   = clamp(max(4 N, 256 A / 1024^2), 32, 256)
    proposals = clamp(max(4 RoIs, 2000 A / 1024^2), 64, 2000)  after NMS
    pre-NMS   = min(2 proposals, 2000)                         per level

Half of the anchors may be positives, so 4 N leaves room for every object. A
quarter of the sampled RoIs may be positives (besides the ground-truth boxes that
Faster R-CNN adds to the proposals), so 2 N RoIs give half of the objects of the
most crowded tile a positive RoI per step, and every object one over two steps;
the RoIs are drawn from 4 times as many proposals. The area terms keep the
reference's density on large tiles (torchvision's 512 RoIs, 256 anchors and 2000
proposals on a 1024 px tile). On the CPU the RoIs' cost is mostly RoIAlign's
backward pass (about 1 ms per RoI at 64 channels), and the proposals' is
non-maximum suppression over every level's top anchors: with 4 N RoIs and at least
16 RoIs and 128 proposals, the detector's training step on a tiny ViT at 64 px ran
at 0.47-0.48 of the encoder's own speed; with the rule above at 0.5-0.54 (issue 15,
BENCHMARKS.md).

.. versionadded:: 0.1
"""

import logging
import math
from typing import Any

from torch import nn

from .. import SUMMARY_LOGGER

__all__ = (
    'box_representation_size',
    'detection_sampling',
    'head_channels',
    'log_head_sizes',
)

summary = logging.getLogger(SUMMARY_LOGGER)

#: Encoder depth at which the head is as wide as the encoder (see above).
_DEPTH_PER_WIDTH = 192

#: Channels are a multiple of this, and at least the least.
_CHANNEL_STEP = 8
_MIN_CHANNELS = 32

#: Sampled RoIs and anchors per image, per object seen in a tile, and proposals
#: per sampled RoI (see above).
_ROIS_PER_OBJECT = 2
_ANCHORS_PER_OBJECT = 4
_PROPOSALS_PER_ROI = 4

#: Reference tile area of the sampling sizes, and the sizes on it.
_REFERENCE_AREA = 1024**2
_ROIS = (8, 512)
_ANCHORS = (32, 256)
_PROPOSALS = (64, 2000)

#: Box head width per pyramid channel, and its most.
_REPRESENTATION_PER_CHANNEL = 4
_MAX_REPRESENTATION = 1024


def head_channels(embed_dim: int, depth: int, cap: int) -> int:
    """Width of a dense head that costs about as much as the encoder.

    Args:
        embed_dim: The encoder's width D.
        depth: The encoder's number of blocks.
        cap: The most channels (512 for UperNet, 256 for the detector's pyramid).

    Returns:
        ``D * sqrt(depth / 192)``, rounded to a multiple of 8, in ``[32, cap]``.
    """
    width = embed_dim * math.sqrt(depth / _DEPTH_PER_WIDTH)
    rounded = round(width / _CHANNEL_STEP) * _CHANNEL_STEP
    return max(_MIN_CHANNELS, min(cap, rounded))


def box_representation_size(out_channels: int) -> int:
    """Width of the box head's fully connected layers: 4 per channel, at most 1024.

    Args:
        out_channels: Channels of the detector's feature pyramid.

    Returns:
        The width.
    """
    return min(_MAX_REPRESENTATION, _REPRESENTATION_PER_CHANNEL * out_channels)


def detection_sampling(image_size: int, max_objects: int) -> dict[str, int]:
    """Training-time sampling of the detector per image (Faster R-CNN arguments).

    Args:
        image_size: Side of the training tiles in pixels.
        max_objects: The most objects seen in a training tile.

    Returns:
        ``box_batch_size_per_image``, ``rpn_batch_size_per_image``,
        ``rpn_post_nms_top_n_train`` and ``rpn_pre_nms_top_n_train``.
    """
    share = image_size**2 / _REFERENCE_AREA

    def clamp(needed: int, least: int, most: int) -> int:
        return max(least, min(most, max(needed, math.ceil(most * share))))

    rois = clamp(_ROIS_PER_OBJECT * max_objects, *_ROIS)
    proposals = clamp(_PROPOSALS_PER_ROI * rois, *_PROPOSALS)
    return {
        'box_batch_size_per_image': rois,
        'rpn_batch_size_per_image': clamp(_ANCHORS_PER_OBJECT * max_objects, *_ANCHORS),
        'rpn_post_nms_top_n_train': proposals,
        'rpn_pre_nms_top_n_train': min(_PROPOSALS[1], 2 * proposals),
    }


def log_head_sizes(model: nn.Module) -> None:
    """Log a task model's head sizes, once per run (shown at normal verbosity).

    Args:
        model: A task model with ``config()``.
    """
    config: dict[str, Any] = model.config()  # type: ignore[operator]
    options = config['options']
    match config['task']:
        case 'segment':
            head = (
                f'UperNet of {options["channels"]} channels on a '
                f'{options.get("neck", "full")}-width pyramid'
            )
        case 'detect':
            args = options['detector_args']
            pyramid = (
                f'FPN on blocks {options["out_indices"]}'
                if options.get('pyramid') == 'multi'
                else 'simple pyramid on the last block'
            )
            head = (
                f'{pyramid} of {options["out_channels"]} channels, box head '
                f'{options["box_head"]} of width {options["representation_size"]}, '
                f'{args.get("box_batch_size_per_image", 512)} RoIs and '
                f'{args.get("rpn_batch_size_per_image", 256)} anchors sampled per image'
            )
        case _:
            head = f'linear classifier on {options["pool"]}-pooled tokens'
    encoder = model.encoder  # type: ignore[union-attr]
    summary.info(
        'head: %s (encoder width %d, %d blocks, %d px tiles; change with --head-arg)',
        head,
        encoder.embed_dim,
        encoder.num_layers,
        config['encoder']['image_size'],
    )
