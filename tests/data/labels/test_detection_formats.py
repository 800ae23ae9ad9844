"""Readers of the detection data sets' own layouts: NWPU VHR-10, HRSC2016, DOTA."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dspt_geo.data.labels import (
    NWPU_CLASSES,
    LabelError,
    collate_labelled,
    open_labelled,
    read_dota,
    read_hrsc,
    read_nwpu,
)
from dspt_geo.errors import NoRastersFoundError
from dspt_geo.train.metrics import TaskMetrics

KINDS = ('nwpu', 'hrsc', 'dota')


def label_files(labels: list[Path], suffix: str) -> list[Path]:
    return sorted(p for folder in labels for p in folder.glob(f'*{suffix}'))


def test_nwpu_boxes_classes_and_images(tmp_path, detection_sets):
    written = detection_sets('nwpu', tmp_path)

    records = read_nwpu(label_files(written.labels, '.txt'), written.images)

    assert [Path(r.path).parent.name for r in records] == ['positive image set'] * 3
    assert [Path(r.path).stem for r in records] == ['001', '002', '003']
    first = records[0]
    np.testing.assert_array_equal(first.boxes, [[8, 10, 24, 30], [40, 40, 60, 56]])
    assert first.labels == ['airplane', 'vehicle']
    assert records[1].labels == ['ship'] and first.difficult is None
    # Without images, the sibling "positive image set" of "ground truth".
    default = read_nwpu(label_files(written.labels, '.txt'))
    assert [r.path for r in default] == [r.path for r in records]


def test_nwpu_bad_line_names_file_and_line(tmp_path, detection_sets):
    written = detection_sets('nwpu', tmp_path)
    bad = written.labels[0] / '002.txt'
    bad.write_text('(4,4),(20,20),2\n(4,4),(20,20),11\n')

    with pytest.raises(LabelError, match=r'002.txt line 2: .*class 1-10'):
        read_nwpu([bad], written.images)


def test_hrsc_boxes_classes_difficult(tmp_path, detection_sets):
    written = detection_sets('hrsc', tmp_path)

    records = read_hrsc(label_files(written.labels, '.xml'))

    assert [Path(r.path).name for r in records] == [
        '100000001.bmp',
        '100000002.bmp',
        '100000003.bmp',
    ]
    np.testing.assert_array_equal(
        records[0].boxes, [[10, 10, 30, 40], [40, 20, 58, 36]]
    )
    assert records[0].labels == ['100000002', '100000002']
    assert records[0].difficult.tolist() == [False, True]
    assert records[1].labels == ['100000003']


def test_hrsc_rotated_box_only_gives_its_bounds(tmp_path, detection_sets):
    written = detection_sets('hrsc', tmp_path)
    xml = written.labels[0] / '100000002.xml'
    text = xml.read_text()
    start, end = text.index('<box_xmin>'), text.index('<mbox_cx>')
    # A 20 x 10 box at (50, 40) turned by 90 degrees spans 10 x 20.
    text = text[:start] + text[end:]
    text = text.replace('<mbox_cx>15.0</mbox_cx>', '<mbox_cx>50</mbox_cx>')
    text = text.replace('<mbox_cy>40.0</mbox_cy>', '<mbox_cy>40</mbox_cy>')
    text = text.replace('<mbox_h>20</mbox_h>', '<mbox_h>10</mbox_h>')
    text = text.replace('<mbox_ang>0</mbox_ang>', f'<mbox_ang>{np.pi / 2}</mbox_ang>')
    xml.write_text(text)

    (record,) = read_hrsc([xml], written.images)

    np.testing.assert_allclose(record.boxes, [[45, 30, 55, 50]], atol=1e-4)


def test_dota_quadrilaterals_become_bounds(tmp_path, detection_sets):
    written = detection_sets('dota', tmp_path)

    records = read_dota(label_files(written.labels, '.txt'), written.images)

    assert [Path(r.path).stem for r in records] == ['P0000', 'P0001', 'P0002']
    assert [r.split for r in records] == ['train', 'train', 'val']
    np.testing.assert_array_equal(
        records[0].boxes, [[10, 10, 30, 30], [40, 40, 60, 60], [50, 5, 70, 20]]
    )  # the diamond's bounds; the box past the edge is clipped by the dataset
    assert records[0].labels == ['plane', 'small-vehicle', 'plane']
    assert records[0].difficult.tolist() == [False, True, False]


def test_dota_bad_line_names_file_and_line(tmp_path, detection_sets):
    written = detection_sets('dota', tmp_path)
    bad = written.labels[0] / 'P0001.txt'
    bad.write_text('imagesource:GoogleEarth\ngsd:0.1\n5 30 25 30 25 50 plane 0\n')

    with pytest.raises(LabelError, match=r'P0001.txt line 3: .*not a DOTA object'):
        read_dota([bad], written.images)


def test_missing_image_is_reported(tmp_path, detection_sets):
    written = detection_sets('dota', tmp_path)
    (written.images / 'train' / 'images' / 'P0001.png').unlink()

    with pytest.raises(NoRastersFoundError, match='P0001'):
        read_dota(label_files(written.labels, '.txt'), written.images)


@pytest.mark.parametrize('kind', KINDS)
def test_open_labelled_tells_the_format(kind, tmp_path, detection_sets):
    written = detection_sets(kind, tmp_path)

    data = open_labelled('detect', written.images, written.labels, split=None)

    assert data.reader == kind
    names = {
        'nwpu': NWPU_CLASSES,
        'hrsc': ('100000002', '100000003'),
        'dota': ('plane', 'small-vehicle'),
    }[kind]
    assert data.class_table.names == names
    batch = next(
        iter(DataLoader(data.train, batch_size=3, collate_fn=collate_labelled))
    )
    objects = list(written.objects.values())
    for boxes, labels, items in zip(
        batch['boxes'], batch['labels'], objects, strict=True
    ):
        kept = [(box, name) for box, name, difficult in items if not difficult]
        expected = torch.tensor([box for box, _ in kept], dtype=torch.float32)
        torch.testing.assert_close(boxes, expected.clamp(max=64))  # clipped to 64 px
        wanted = [names.index(NWPU_CLASSES[int(n) - 1] if kind == 'nwpu' else n)
                  for _, n in kept]  # fmt: skip
        assert labels.tolist() == wanted
    difficult = [[list(box) for box, _, d in items if d] for items in objects]
    if kind == 'nwpu':
        assert 'ignore_boxes' not in batch, 'NWPU VHR-10 has no difficult flag'
    else:
        assert [b.tolist() for b in batch['ignore_boxes']] == difficult


def test_one_file_is_told_too(tmp_path, detection_sets):
    written = detection_sets('dota', tmp_path)
    one = written.labels[0] / 'P0000.txt'

    data = open_labelled('detect', written.images, one, split=None)

    assert data.reader == 'dota' and len(data.train) == 1


def test_detections_of_ignored_boxes_are_neither_hits_nor_misses():
    metrics = TaskMetrics('detect', ['plane', 'ship'])
    batch = {
        'boxes': [torch.tensor([[0.0, 0.0, 10.0, 10.0]])],
        'labels': [torch.tensor([0])],
        'ignore_boxes': [torch.tensor([[20.0, 20.0, 30.0, 30.0]])],
        'ignore_labels': [torch.tensor([0])],
    }
    found = {
        'boxes': torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 31.0]]),
        'scores': torch.tensor([0.6, 0.9]),
        'labels': torch.tensor([1, 1]),  # detector labels are 1-based
    }
    metrics.update(batch, [found])
    with_ignore = metrics.compute()['map_50']
    metrics.reset()
    metrics.update({k: batch[k] for k in ('boxes', 'labels')}, [found])
    without = metrics.compute()['map_50']

    assert with_ignore == pytest.approx(1.0)
    assert without < 0.99, (
        'the detection of the difficult box would be a false positive'
    )
