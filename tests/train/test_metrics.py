"""TaskMetrics: the numbers validation logs and evaluate reports."""

import math

import pytest
import torch

from dspt_geo.train.metrics import TaskMetrics


def one_hot_logits(predictions: torch.Tensor, classes: int) -> torch.Tensor:
    """Logits whose argmax is *predictions* (class dimension 1)."""
    return torch.nn.functional.one_hot(predictions, classes).movedim(-1, 1).float()


def test_classification_accuracy_and_confusion_matrix():
    metrics = TaskMetrics('classify', ['a', 'b', 'c'])
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    predicted = torch.tensor([0, 1, 1, 1, 0, 2])

    # Two batches add up like one.
    metrics.update({'label': labels[:4]}, one_hot_logits(predicted[:4], 3))
    metrics.update({'label': labels[4:]}, one_hot_logits(predicted[4:], 3))
    report = metrics.compute()

    assert report['confusion_matrix'] == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    assert report['accuracy'] == pytest.approx(4 / 6)
    assert report['per_class']['b'] == {'accuracy': pytest.approx(2 / 3), 'support': 3}
    assert report['mean_class_accuracy'] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert metrics.scalars(report) == {'accuracy': pytest.approx(4 / 6)}


def test_segmentation_iou_ignores_unlabelled_pixels_and_absent_classes():
    metrics = TaskMetrics('segment', ['ground', 'house', 'pool'], ignore_index=255)
    mask = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 255]])
    predicted = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1]])

    metrics.update({'mask': mask[None]}, one_hot_logits(predicted[None], 3))
    report = metrics.compute()

    # ground: 3 right of 4 labelled, 1 more predicted -> 3/5; house: 2/4; pool:
    # neither labelled nor predicted, left out of the mean.
    assert report['pixels'] == 7
    assert report['per_class']['ground']['iou'] == pytest.approx(3 / 5)
    assert report['per_class']['house']['iou'] == pytest.approx(2 / 4)
    assert report['per_class']['house']['f1'] == pytest.approx(2 * 2 / (3 + 3))
    assert report['per_class']['pool'] == {'iou': None, 'f1': None, 'support': 0}
    assert report['miou'] == pytest.approx((3 / 5 + 2 / 4) / 2)
    assert report['pixel_accuracy'] == pytest.approx(5 / 7)


def test_detection_map_and_owned_windows():
    metrics = TaskMetrics('detect', ['car', 'boat'])
    truth = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    batch = {
        'boxes': [truth, torch.zeros(0, 4)],
        'labels': [torch.tensor([0, 1]), torch.zeros(0, dtype=torch.long)],
        'owned': torch.tensor([[0, 0, 32, 32], [0, 0, 16, 16]]),
    }
    detections = [
        # Detector labels are 1..K: car is 1, boat 2.
        {
            'boxes': truth,
            'scores': torch.tensor([0.9, 0.8]),
            'labels': torch.tensor([1, 2]),
        },
        # A false boat, but centred outside the window's owned part: not counted.
        {
            'boxes': torch.tensor([[20.0, 20, 30, 30]]),
            'scores': torch.tensor([0.99]),
            'labels': torch.tensor([2]),
        },
    ]

    metrics.update(batch, detections)
    report = metrics.compute()

    assert report['samples'] == 2
    assert report['map_50'] == pytest.approx(1.0)
    assert report['map'] == pytest.approx(1.0)
    assert report['per_class']['car'] == {
        'ap_50': pytest.approx(1.0),
        'ap': pytest.approx(1.0),
        'support': 1,
    }
    assert report['per_class']['boat']['ap_50'] == pytest.approx(1.0)
    metrics.reset()
    assert math.isnan(metrics.scalars(metrics.compute())['map_50'])
