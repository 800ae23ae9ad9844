"""The standard metrics of each fine-tuning task, shared by validation and evaluation.

One :class:`TaskMetrics` serves a run's validation epochs and ``dspt-geo
evaluate``, so both report the same numbers on the same data:

* classification: overall accuracy, per-class accuracy (recall) and the confusion
  matrix;
* segmentation: mean IoU over the classes present (in the labels or the
  predictions), per-class IoU and F1, pixel accuracy, from one confusion matrix
  of labelled pixels;
* detection: COCO mAP@0.5 and mAP@[.5:.95], overall and per class (torchmetrics'
  ``MeanAveragePrecision`` on pycocotools). It has no "ignore" ground truth, so
  batches with ``ignore_boxes`` (difficult objects) are scored as Pascal VOC does:
  those boxes are not ground truth (no miss), and a detection whose best overlap
  of its class is an ignored box, at IoU >= 0.5, is dropped (no false positive).

The states are torchmetrics states, so under DDP every process adds its share
and :meth:`TaskMetrics.compute` reports on all of them.
"""

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_iou

from ..task import Task

__all__ = ('MONITORED', 'TaskMetrics')

#: The metric that picks a run's best validation, per task.
MONITORED = {'classify': 'accuracy', 'segment': 'miou', 'detect': 'map_50'}


class _Counts(Metric):
    """A vector of counts summed over batches and processes."""

    full_state_update = False
    #: The state: one count per entry.
    counts: Tensor

    def __init__(self, size: int) -> None:
        super().__init__()
        self.add_state('counts', torch.zeros(size, dtype=torch.long), 'sum')

    def update(self, counts: Tensor) -> None:
        """Add *counts*."""
        self.counts += counts.to(self.counts)

    def compute(self) -> Tensor:
        """The counts so far."""
        return self.counts


class TaskMetrics(nn.Module):
    """Accumulate a task's metrics over batches; report them as plain data.

    .. versionadded:: 0.1
    """

    def __init__(
        self, task: Task, class_names: Sequence[str], ignore_index: int = 255
    ) -> None:
        """Initialise the metrics.

        Args:
            task: ``'classify'``, ``'segment'`` or ``'detect'``.
            class_names: class names in model output order.
            ignore_index: mask value of unlabelled pixels (segmentation).

        Raises:
            ValueError: If *task* is unknown.
        """
        super().__init__()
        if task not in MONITORED:
            msg = f"task must be 'classify', 'segment' or 'detect', got {task!r}"
            raise ValueError(msg)
        self.task = task
        self.class_names = tuple(class_names)
        self.ignore_index = ignore_index
        num_classes = len(self.class_names)
        if task == 'detect':
            self.detection = MeanAveragePrecision(
                box_format='xyxy', iou_type='bbox', extended_summary=True
            )
            # Images, then the ground-truth boxes of every class.
            self.counts = _Counts(1 + num_classes)
        else:
            self.confusion = MulticlassConfusionMatrix(
                num_classes,
                ignore_index=ignore_index if task == 'segment' else None,
                validate_args=False,
            )

    @property
    def monitored(self) -> str:
        """Name of the metric that ranks validations (higher is better)."""
        return MONITORED[self.task]

    def update_mask(self, predicted: Tensor, mask: Tensor) -> None:
        """Add predicted class indices of segmentation against the labelled mask.

        Args:
            predicted: class indices, any shape.
            mask: labels of the same pixels (``ignore_index`` where unlabelled).
        """
        self.confusion.update(predicted, mask)

    def update(self, batch: dict[str, Any], output: Any) -> None:
        """Add a batch and the model's output on it.

        Args:
            batch: a batch of :func:`~dspt_geo.data.labels.collate_labelled`
                (``label``, ``mask``, or ``boxes`` and ``labels`` with class indices
                0..K-1; ``owned`` restricts detections to a window's part).
            output: logits ``(B, K)`` or ``(B, K, H, W)``, or the detector's list of
                ``boxes``/``scores``/``labels`` (1..K) per image.
        """
        match self.task:
            case 'classify':
                self.confusion.update(output.argmax(dim=1), batch['label'])
            case 'segment':
                self.update_mask(output.argmax(dim=1), batch['mask'])
            case 'detect':
                self._update_detection(batch, output)

    def _update_detection(
        self, batch: dict[str, Any], detections: list[dict[str, Tensor]]
    ) -> None:
        """Add detections (labels 1..K) and ground truth (0..K-1) of a batch."""
        preds, targets = [], []
        owned = batch.get('owned')
        num_classes = len(self.class_names)
        counts = torch.zeros(1 + num_classes, dtype=torch.long)
        for i, found in enumerate(detections):
            boxes, scores, labels = found['boxes'], found['scores'], found['labels']
            if owned is not None:
                x0, y0, x1, y1 = owned[i].tolist()
                cx = (boxes[:, 0] + boxes[:, 2]) / 2
                cy = (boxes[:, 1] + boxes[:, 3]) / 2
                keep = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
                boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            if 'ignore_boxes' in batch:
                keep = ~_matches_ignored(
                    boxes,
                    labels - 1,
                    batch['boxes'][i].to(boxes.device),
                    batch['labels'][i].to(boxes.device),
                    batch['ignore_boxes'][i].to(boxes.device),
                    batch['ignore_labels'][i].to(boxes.device),
                )
                boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            preds.append(
                {'boxes': boxes.float(), 'scores': scores.float(), 'labels': labels - 1}
            )
            truth = batch['labels'][i].to(boxes.device)
            targets.append({'boxes': batch['boxes'][i].float(), 'labels': truth})
            counts[0] += 1
            counts[1:] += torch.bincount(truth.cpu(), minlength=num_classes)
        self.detection.update(preds, targets)
        self.counts.update(counts)

    def reset(self) -> None:
        """Start over."""
        for metric in self.children():
            if isinstance(metric, Metric):
                metric.reset()

    def compute(self) -> dict[str, Any]:
        """Report the metrics over everything added (all processes).

        Returns:
            plain JSON data: the scalar metrics (see :meth:`scalars`), ``per_class``
            (by class name) and, for classification, ``confusion_matrix`` (rows:
            labels, columns: predictions). Undefined values are None.
        """
        if self.task == 'detect':
            return self._detection_report()
        matrix = self.confusion.compute().long().cpu()
        total = int(matrix.sum())
        correct = matrix.diag()
        labelled = matrix.sum(dim=1)
        predicted = matrix.sum(dim=0)
        if self.task == 'classify':
            recall = [_ratio(c, n) for c, n in zip(correct, labelled, strict=True)]
            present = [r for r in recall if r is not None]
            return {
                'task': 'classify',
                'samples': total,
                'accuracy': _ratio(correct.sum(), total),
                'mean_class_accuracy': _mean(present),
                'per_class': {
                    name: {'accuracy': r, 'support': int(n)}
                    for name, r, n in zip(
                        self.class_names, recall, labelled, strict=True
                    )
                },
                'confusion_matrix': matrix.tolist(),
            }
        union = labelled + predicted - correct
        iou = [_ratio(c, u) for c, u in zip(correct, union, strict=True)]
        f1 = [
            _ratio(2 * c, n + p)
            for c, n, p in zip(correct, labelled, predicted, strict=True)
        ]
        return {
            'task': 'segment',
            'pixels': total,
            'miou': _mean([v for v in iou if v is not None]),
            'pixel_accuracy': _ratio(correct.sum(), total),
            'mean_f1': _mean([v for v in f1 if v is not None]),
            'per_class': {
                name: {'iou': i, 'f1': f, 'support': int(n)}
                for name, i, f, n in zip(
                    self.class_names, iou, f1, labelled, strict=True
                )
            },
        }

    def _detection_report(self) -> dict[str, Any]:
        """COCO mAP overall and per class, from the precision table."""
        counts = self.counts.compute().cpu()
        if int(counts[0]) == 0:
            result: dict[str, Any] = {'map': -1.0, 'map_50': -1.0}
            per_class_ap = {}
        else:
            result = self.detection.compute()
            # precision: (IoU thresholds, recall thresholds, classes, areas, max
            # detections); area 0 is all, the last max-detections is 100; -1 where
            # a class has no ground truth.
            precision = result['precision'][:, :, :, 0, -1].cpu()
            classes = result['classes'].reshape(-1).tolist()
            per_class_ap = {
                int(label): (
                    _mean_valid(precision[0, :, k]),
                    _mean_valid(precision[:, :, k]),
                )
                for k, label in enumerate(classes)
            }
        per_class = {}
        for index, name in enumerate(self.class_names):
            ap_50, ap = per_class_ap.get(index, (None, None))
            per_class[name] = {
                'ap_50': ap_50,
                'ap': ap,
                'support': int(counts[1 + index]),
            }
        return {
            'task': 'detect',
            'samples': int(counts[0]),
            'map_50': _defined(float(result['map_50'])),
            'map': _defined(float(result['map'])),
            'per_class': per_class,
        }

    def scalars(self, report: dict[str, Any]) -> dict[str, float]:
        """The scalar metrics of a report, NaN where undefined (for logging).

        Args:
            report: from :meth:`compute`.

        Returns:
            ``accuracy`` (classify); ``miou``, ``pixel_accuracy`` (segment);
            ``map_50``, ``map`` (detect).
        """
        names = {
            'classify': ('accuracy',),
            'segment': ('miou', 'pixel_accuracy'),
            'detect': ('map_50', 'map'),
        }[self.task]
        return {
            name: math.nan if report[name] is None else float(report[name])
            for name in names
        }


def _matches_ignored(
    boxes: Tensor,
    labels: Tensor,
    truth: Tensor,
    truth_labels: Tensor,
    ignored: Tensor,
    ignored_labels: Tensor,
) -> Tensor:
    """Detections whose best same-class overlap is an ignored box, at IoU >= 0.5.

    Args:
        boxes: (N, 4) detections.
        labels: (N,) their class indices.
        truth: (M, 4) ground-truth boxes.
        truth_labels: (M,) their class indices.
        ignored: (K, 4) ignored (difficult) boxes.
        ignored_labels: (K,) their class indices.

    Returns:
        (N,) bool, True for the detections to leave out.
    """
    if len(boxes) == 0 or len(ignored) == 0:
        return torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    same = labels[:, None] == ignored_labels[None, :]
    best_ignored = (box_iou(boxes.float(), ignored.float()) * same).amax(dim=1)
    best_truth = torch.zeros_like(best_ignored)
    if len(truth):
        same = labels[:, None] == truth_labels[None, :]
        best_truth = (box_iou(boxes.float(), truth.float()) * same).amax(dim=1)
    return (best_ignored >= 0.5) & (best_ignored > best_truth)


def _ratio(numerator: Tensor | int, denominator: Tensor | int) -> float | None:
    """``numerator / denominator``, None when the denominator is 0."""
    denominator = int(denominator)
    return None if denominator == 0 else int(numerator) / denominator


def _mean(values: Sequence[float]) -> float | None:
    """Mean of *values*, None when there are none."""
    return sum(values) / len(values) if values else None


def _mean_valid(precision: Tensor) -> float | None:
    """COCO's average of a precision table's defined (non-negative) entries."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.numel() else None


def _defined(value: float) -> float | None:
    """*value*, None where torchmetrics reports -1 (undefined)."""
    return None if value < 0 else value
