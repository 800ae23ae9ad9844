"""Boxes from overlapping windows, merged into one set of detections per scene.

A detector sees an object that crosses a window edge cut in two: one window may
report the part inside it, its neighbour (which, with an overlap larger than the
object, holds it whole) the whole object. Boxes are therefore flagged *truncated*
when they touch an edge the window shares with a neighbour, and merged by
class-wise greedy suppression over the whole scene that prefers whole boxes (by
score) to truncated ones (by size, then score). A box is suppressed by a kept box
of its class when their intersection over union reaches ``iou_threshold`` (the
usual NMS) or when it lies mostly inside it (intersection over the smaller area
reaches ``containment``), which removes the cut-off parts of an object seen whole
next door.

Pairs are found with a shapely STRtree, so merging costs about linear time in the
number of boxes (each box meets only its neighbours).

An object is found once when some window holds it whole, i.e. when the overlap is
at least the object's size (as the overlap must cover a segmentation model's
receptive field). A larger object may come out as one box per window it crosses.

The detector's work per window is sized to the window (:func:`detection_limits`):
a window of ``size`` pixels is expected to hold at most
``ceil(max_objects * size**2 / tile**2)`` objects, where ``max_objects`` is the
most objects one training tile held (counted from the training labels by
``dspt-geo finetune`` and stored in the model file; ``--max-objects`` overrides
it). The detector then keeps ``2 * objects + 8`` detections and ten proposals per
detection (torchvision's 1,000 proposals for 100 detections), each capped at the
model's own setting. A model file without the count assumes one object per
:data:`FALLBACK_OBJECT_AREA` pixels of the training tile.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import shapely
from affine import Affine
from geopandas import GeoDataFrame
from rasterio.crs import CRS

from .tiling import Tile

__all__ = (
    'FALLBACK_OBJECT_AREA',
    'DetectionAccumulator',
    'DetectionLimits',
    'detection_limits',
    'detections_frame',
    'merge_boxes',
)

#: A box this close (pixels) to a shared window edge counts as cut by it.
EDGE_PIXELS = 2.0

#: Pixels per object assumed when the model file does not record how many objects
#: a training tile held (a 16 x 16 px object, one ViT patch, on every patch).
FALLBACK_OBJECT_AREA = 16 * 16

#: Detections kept per expected object, and the extra ones (duplicates across
#: classes, boxes below the score threshold).
_DETECTIONS_PER_OBJECT = 2
_EXTRA_DETECTIONS = 8

#: Proposals per kept detection (torchvision's 1,000 for 100).
_PROPOSALS_PER_DETECTION = 10


class DetectionLimits(NamedTuple):
    """What a detector keeps per window (see the module docstring)."""

    #: objects a window of this size is expected to hold at most.
    objects: int
    #: region proposals per window (before and after the RPN's NMS).
    proposals: int
    #: detections per window.
    detections: int


def detection_limits(
    size: int, tile: int, max_objects: int | None = None
) -> DetectionLimits:
    """Proposals and detections per window for windows of *size* pixels.

    Args:
        size: window side in pixels.
        tile: training tile side in pixels.
        max_objects: most objects one training tile held (None: one per
            :data:`FALLBACK_OBJECT_AREA` pixels).

    Returns:
        the limits (the model caps them at its own settings).

    Raises:
        ValueError: If a size is not positive or *max_objects* is negative.

    .. versionadded:: 0.1
    """
    if size < 1 or tile < 1 or (max_objects is not None and max_objects < 0):
        msg = (
            f'need size, tile >= 1 and max_objects >= 0; got {size, tile, max_objects}'
        )
        raise ValueError(msg)
    if max_objects is None:
        max_objects = math.ceil(tile * tile / FALLBACK_OBJECT_AREA)
    objects = math.ceil(max_objects * (size / tile) ** 2)
    detections = _DETECTIONS_PER_OBJECT * objects + _EXTRA_DETECTIONS
    return DetectionLimits(objects, _PROPOSALS_PER_DETECTION * detections, detections)


@dataclass
class DetectionAccumulator:
    """Boxes of every window, in scene pixel coordinates, before merging.

    Attributes:
        score_threshold: boxes scoring below are dropped as they arrive.
        boxes: ``(N, 4)`` arrays of ``x1, y1, x2, y2`` in scene pixels.
        labels: torchvision labels (1 .. K).
        scores: scores.
        truncated: whether each box touches a window edge shared with a neighbour.

    .. versionadded:: 0.1
    """

    score_threshold: float = 0.5
    boxes: list[npt.NDArray[np.float64]] = field(default_factory=list)
    labels: list[npt.NDArray[np.int64]] = field(default_factory=list)
    scores: list[npt.NDArray[np.float64]] = field(default_factory=list)
    truncated: list[npt.NDArray[np.bool_]] = field(default_factory=list)

    def add(
        self,
        tile: Tile,
        boxes: npt.NDArray[np.floating],
        labels: npt.NDArray[np.integer],
        scores: npt.NDArray[np.floating],
        valid: npt.NDArray[np.bool_],
    ) -> None:
        """Add one window's boxes.

        Boxes are clipped to the scene part of the window; boxes scoring below the
        threshold, with a label of 0 (background), empty after clipping or centred
        on an invalid pixel are dropped.

        Args:
            tile: the window.
            boxes: ``(N, 4)`` ``x1, y1, x2, y2`` in window pixels.
            labels: ``(N,)`` labels, 1 .. K.
            scores: ``(N,)`` scores.
            valid: ``(size, size)`` valid mask of the window.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, tile.width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, tile.height)
        keep = (
            (scores >= self.score_threshold)
            & (labels > 0)
            & (boxes[:, 2] > boxes[:, 0])
            & (boxes[:, 3] > boxes[:, 1])
        )
        if keep.any():
            centre_x = (
                ((boxes[:, 0] + boxes[:, 2]) / 2).astype(int).clip(0, tile.width - 1)
            )
            centre_y = (
                ((boxes[:, 1] + boxes[:, 3]) / 2).astype(int).clip(0, tile.height - 1)
            )
            keep &= valid[centre_y, centre_x]
        boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
        truncated = np.zeros(len(boxes), dtype=bool)
        if not tile.left:
            truncated |= boxes[:, 0] <= EDGE_PIXELS
        if not tile.top:
            truncated |= boxes[:, 1] <= EDGE_PIXELS
        if not tile.right:
            truncated |= boxes[:, 2] >= tile.width - EDGE_PIXELS
        if not tile.bottom:
            truncated |= boxes[:, 3] >= tile.height - EDGE_PIXELS
        boxes += np.array([tile.col, tile.row, tile.col, tile.row], dtype=np.float64)
        self.boxes.append(boxes)
        self.labels.append(labels)
        self.scores.append(scores)
        self.truncated.append(truncated)

    def __len__(self) -> int:
        """Boxes held (before merging)."""
        return sum(len(b) for b in self.boxes)

    def merged(
        self, iou_threshold: float = 0.5, containment: float = 0.8
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Merge the boxes over the scene (see :func:`merge_boxes`).

        Args:
            iou_threshold: suppression threshold on intersection over union.
            containment: suppression threshold on intersection over smaller area.

        Returns:
            kept boxes, labels and scores, best first.
        """
        if not self.boxes:
            return np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0)
        boxes = np.concatenate(self.boxes)
        labels = np.concatenate(self.labels)
        scores = np.concatenate(self.scores)
        truncated = np.concatenate(self.truncated)
        keep = merge_boxes(boxes, labels, scores, truncated, iou_threshold, containment)
        return boxes[keep], labels[keep], scores[keep]


def merge_boxes(
    boxes: npt.NDArray[np.floating],
    labels: npt.NDArray[np.integer],
    scores: npt.NDArray[np.floating],
    truncated: npt.NDArray[np.bool_] | None = None,
    iou_threshold: float = 0.5,
    containment: float = 0.8,
) -> npt.NDArray[np.int64]:
    """Class-wise greedy suppression, whole boxes before truncated ones.

    Priority: whole boxes by score, then truncated boxes by area and score. Each
    kept box suppresses the lower-priority boxes of its label that it clashes with.

    Args:
        boxes: ``(N, 4)`` ``x1, y1, x2, y2``.
        labels: ``(N,)`` class labels; only boxes of one label suppress each other.
        scores: ``(N,)`` scores.
        truncated: ``(N,)`` flags of boxes cut by a window edge (default: none).
        iou_threshold: suppress at intersection over union >= this.
        containment: suppress at intersection over the smaller area >= this (use
            1.0 or more to turn off).

    Returns:
        indexes of the kept boxes, in priority order.

    .. versionadded:: 0.1
    """
    count = len(boxes)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64)
    if truncated is None:
        truncated = np.zeros(count, dtype=bool)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    # Whole boxes by score; then truncated ones, larger first: of two cut views of
    # one object, the larger is the more complete one.
    order = np.lexsort(
        (
            -np.asarray(scores, dtype=np.float64),
            np.where(truncated, -area, 0.0),
            truncated,
        )
    )
    rank = np.empty(count, dtype=np.int64)
    rank[order] = np.arange(count)

    tree = shapely.STRtree(shapely.box(*boxes.T))
    first, second = tree.query(shapely.box(*boxes.T), predicate='intersects')
    same = (first != second) & (labels[first] == labels[second])
    first, second = first[same], second[same]
    a, b = boxes[first], boxes[second]
    width = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    height = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = width.clip(0) * height.clip(0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iou = inter / np.maximum(area_a + area_b - inter, 1e-12)
    smaller = inter / np.maximum(np.minimum(area_a, area_b), 1e-12)
    clash = (iou >= iou_threshold) | (smaller >= containment)
    # Keep each pair once, from the higher-priority box to the lower one.
    clash &= rank[first] < rank[second]
    first, second = first[clash], second[clash]
    by_first = np.argsort(first, kind='stable')
    first, second = first[by_first], second[by_first]
    starts = np.searchsorted(first, np.arange(count + 1))

    suppressed = np.zeros(count, dtype=bool)
    kept = []
    for index in order:
        if suppressed[index]:
            continue
        kept.append(index)
        suppressed[second[starts[index] : starts[index + 1]]] = True
    return np.asarray(kept, dtype=np.int64)


def detections_frame(
    boxes: npt.NDArray[np.floating],
    labels: npt.NDArray[np.integer],
    scores: npt.NDArray[np.floating],
    *,
    transform: Affine,
    crs: CRS,
    class_names: Sequence[str],
    scene: str,
) -> GeoDataFrame:
    """Pixel boxes as map polygons with ``class_id``, ``class_name``, ``score``, ``scene``.

    Args:
        boxes: ``(N, 4)`` ``x1, y1, x2, y2`` in scene pixels.
        labels: torchvision labels (1 .. K); ``class_id`` is ``label - 1``.
        scores: scores.
        transform: the scene's geotransform.
        crs: the scene's CRS.
        class_names: class names, ``class_id`` indexes them.
        scene: the scene's name, stored per feature.

    Returns:
        the detections (rectangles; parallelograms on a rotated grid).

    .. versionadded:: 0.1
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    corners_x = np.stack([x1, x2, x2, x1, x1], axis=1)
    corners_y = np.stack([y1, y1, y2, y2, y1], axis=1)
    map_x = transform.a * corners_x + transform.b * corners_y + transform.c
    map_y = transform.d * corners_x + transform.e * corners_y + transform.f
    geometry = shapely.polygons(np.stack([map_x, map_y], axis=-1))
    class_id = np.asarray(labels, dtype=np.int32) - 1
    names = np.asarray(class_names, dtype=object)
    return GeoDataFrame(
        {
            'class_id': class_id,
            'class_name': names[class_id]
            if len(class_id)
            else np.array([], dtype=object),
            'score': np.asarray(scores, dtype=np.float64),
            'scene': np.full(len(class_id), scene, dtype=object),
        },
        geometry=geometry,
        crs=crs,
    )
