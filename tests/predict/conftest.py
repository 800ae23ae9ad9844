"""Specs, small models and scenes for the prediction tests."""

import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dspt_geo.predict import PredictionSpec

RGB_METADATA: dict[str, Any] = {
    'task': 'segment',
    'classes': [
        {'name': 'water', 'colour': [31, 120, 180]},
        {'name': 'forest', 'colour': [51, 160, 44]},
        {'name': 'urban', 'colour': [227, 26, 28]},
    ],
    'sensor': {
        'name': '3band-uint8-red-green-blue',
        'bands': ['red', 'green', 'blue'],
        'in_chans': 3,
        'nodata': 0,
        'sar_mode': None,
        'statistics': {
            'bands': ['red', 'green', 'blue'],
            'mean': [100.0, 100.0, 100.0],
            'std': [50.0, 50.0, 50.0],
            'p02': [1.0, 1.0, 1.0],
            'p50': [100.0, 100.0, 100.0],
            'p98': [200.0, 200.0, 200.0],
            'pixels': 1000,
        },
    },
    'tile': {'size': 64, 'overlap': 16},
    'score_threshold': 0.5,
}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine, OpenMP barriers under
    contention make tiny tensor operations ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def metadata() -> dict[str, Any]:
    """A fresh copy of the RGB segmentation metadata."""
    return copy.deepcopy(RGB_METADATA)


@pytest.fixture
def make_spec(metadata: dict[str, Any]) -> Callable[..., PredictionSpec]:
    """A spec from the RGB metadata with top-level keys replaced."""

    def make(**changes: Any) -> PredictionSpec:
        return PredictionSpec.from_metadata({**metadata, **changes})

    return make


class ConvNet(nn.Module):
    """Two 3x3 convolutions (receptive field 5x5) with zero padding."""

    def __init__(self, in_chans: int = 3, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(in_chans, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, classes, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ValueClassifier(nn.Module):
    """Segmentation logits ``-(x - k)^2`` of band 0: class k where the value is k.

    With mean 0 and std 1 normalisation, a pixel of value v gets class v.
    """

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.register_buffer('levels', torch.arange(classes, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -((x[:, :1] - self.levels.view(1, -1, 1, 1)) ** 2)


class MaxClassifier(nn.Module):
    """Window classification: class k where the window's largest band-0 value is k."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.register_buffer('levels', torch.arange(classes, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        peak = x[:, 0].amax(dim=(1, 2))
        return -((peak[:, None] - self.levels[None]) ** 2)


def connected_boxes(
    mask: torch.Tensor,
) -> list[tuple[int, int, int, int, torch.Tensor]]:
    """Boxes ``x1, y1, x2, y2`` of the 8-connected components of *mask*, and their masks.

    Each pixel starts with its own id and takes the largest id around it until
    nothing changes (no scipy needed).
    """
    ids = torch.arange(1, mask.numel() + 1, dtype=torch.float32).view(mask.shape) * mask
    while True:
        grown = F.max_pool2d(ids[None, None], 3, stride=1, padding=1)[0, 0] * mask
        if torch.equal(grown, ids):
            break
        ids = grown
    boxes = []
    for value in ids.unique().tolist():
        if value == 0:
            continue
        component = ids == value
        rows, cols = torch.nonzero(component, as_tuple=True)
        x1, y1 = int(cols.min()), int(rows.min())
        boxes.append((x1, y1, int(cols.max()) + 1, int(rows.max()) + 1, component))
    return boxes


class BlobDetector(nn.Module):
    """Boxes of connected bright blobs in band 0 (normalised > 1); label by value.

    Blobs brighter than 2.5 (normalised) are class 2, others class 1.
    """

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        results = []
        for image in x[:, 0]:
            found = connected_boxes(image > 1)
            boxes = [box[:4] for box in found]
            labels = [2 if image[box[4]].max() > 2.5 else 1 for box in found]
            results.append(
                {
                    'boxes': torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    'labels': torch.tensor(labels, dtype=torch.int64),
                    'scores': torch.full((len(boxes),), 0.9),
                }
            )
        return results


@pytest.fixture
def identity_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """One band, mean 0 and std 1: normalised values are the raw values."""
    metadata['sensor'].update(
        bands=['value'],
        in_chans=1,
        statistics={'mean': [0.0], 'std': [1.0]},
        nodata=255,
    )
    return metadata


@pytest.fixture
def rgb_scene(rng: np.random.Generator) -> Callable[[int, int], np.ndarray]:
    """Random uint8 RGB data, 1..255 (0 is nodata)."""

    def make(height: int, width: int) -> np.ndarray:
        return rng.integers(1, 256, (3, height, width), dtype=np.uint8)

    return make
