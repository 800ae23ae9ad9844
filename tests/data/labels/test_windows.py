"""Scoring windows over scenes: overlapping, every labelled pixel counted once."""

import numpy as np
import pytest
import torch

from dspt_geo.data.labels import SceneWindows, axis_windows, open_labelled


@pytest.mark.parametrize(
    ('length', 'size', 'stride'),
    [(10, 4, 3), (9, 4, 4), (3, 4, 2), (16, 8, 6), (17, 8, 8), (100, 32, 24)],
)
def test_axis_windows_own_every_pixel_once(length, size, stride):
    windows = axis_windows(length, size, stride)

    owned = [
        p for start, low, high in windows for p in range(start + low, start + high)
    ]
    assert owned == list(range(length))
    starts = [start for start, _, _ in windows]
    assert starts[0] == 0 and starts == sorted(starts)
    assert all(0 <= low <= high <= size for _, low, high in windows)
    if length > size:
        assert starts[-1] == length - size  # the last window ends at the edge


def test_axis_windows_refuse_a_stride_beyond_the_window():
    with pytest.raises(ValueError, match='stride'):
        axis_windows(10, 4, 5)


def test_scene_windows_score_each_labelled_pixel_once(raster_writer):
    rng = np.random.default_rng(0)
    image = raster_writer(
        'img/a.tif', rng.integers(1, 200, (2, 70, 100), dtype=np.uint8)
    )
    classes = rng.integers(0, 3, (70, 100), dtype=np.uint8)
    labels = raster_writer('lab/a.tif', classes)
    data = open_labelled('segment', image, labels, split=None, size=32)

    windows = SceneWindows(data.train, overlap=8)
    samples = list(windows)

    assert len(samples) == len(windows.windows) == 4 * 3  # 100 -> 4, 70 -> 3
    counts = np.zeros(3, int)
    for sample in samples:
        mask = sample['mask']
        x0, y0, x1, y1 = sample['owned'].tolist()
        assert (mask[:y0] == 255).all() and (mask[y1:] == 255).all()
        assert (mask[:, :x0] == 255).all() and (mask[:, x1:] == 255).all()
        counts += np.bincount(mask[mask != 255].numpy(), minlength=3)
    assert counts.tolist() == np.bincount(classes.ravel(), minlength=3).tolist()


def test_detection_windows_keep_the_boxes_they_own(raster_writer, vector_writer, geo):
    image = raster_writer('img/a.tif', np.full((1, 64, 64), 100, np.uint8))
    boxes = [geo.pixel_box(x, y, x + 6, y + 6) for x, y in [(2, 2), (28, 30), (50, 52)]]
    labels = vector_writer('boxes.gpkg', boxes)
    data = open_labelled('detect', image, labels, split=None, size=32)

    samples = list(SceneWindows(data.train, overlap=16))

    assert len(samples) == 9  # starts 0, 16, 32 on both axes
    assert sum(len(s['boxes']) for s in samples) == 3
    for sample in samples:
        x0, y0, x1, y1 = sample['owned'].tolist()
        centres = (sample['boxes'][:, :2] + sample['boxes'][:, 2:]) / 2
        assert (
            (centres >= torch.tensor([x0, y0])) & (centres < torch.tensor([x1, y1]))
        ).all()
