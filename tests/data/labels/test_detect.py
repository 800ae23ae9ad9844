import json

import numpy as np
import pytest
import shapely
import torch
from rasterio.crs import CRS
from torch.utils.data import DataLoader

from dspt_geo.data.labels import (
    ChipDetectionDataset,
    LabelError,
    RandomSplit,
    SceneDataset,
    VectorLabels,
    collate_labelled,
    open_labelled,
)


@pytest.fixture
def pngs(tmp_path, png_writer, rng):
    for name in ('a', 'b', 'c'):
        png_writer(
            f'images/{name}.png', rng.integers(0, 255, (3, 20, 30), dtype=np.uint8)
        )
    return tmp_path / 'images'


def test_coco_boxes_over_pngs(tmp_path, pngs):
    coco = {
        'images': [
            {'id': 1, 'file_name': 'a.png', 'width': 30, 'height': 20},
            {'id': 2, 'file_name': 'b.png', 'width': 30, 'height': 20},
            {'id': 3, 'file_name': 'c.png', 'width': 30, 'height': 20},
        ],
        'annotations': [
            {
                'id': 1,
                'image_id': 1,
                'category_id': 7,
                'bbox': [2, 3, 10, 5],
                'iscrowd': 0,
            },
            {'id': 2, 'image_id': 1, 'category_id': 3, 'bbox': [20, 0, 15, 4]},
            {
                'id': 3,
                'image_id': 2,
                'category_id': 3,
                'bbox': [0, 0, 1, 1],
                'iscrowd': 1,
            },
        ],
        'categories': [{'id': 7, 'name': 'truck'}, {'id': 3, 'name': 'car'}],
    }
    (tmp_path / 'coco.json').write_text(json.dumps(coco))

    data = open_labelled('detect', pngs, tmp_path / 'coco.json', split=None)

    assert data.reader == 'coco'
    assert isinstance(data.train, ChipDetectionDataset)
    assert data.class_table.names == ('car', 'truck')
    assert data.class_table.values == (3, 7)
    sample = data.train[0]
    assert sample['boxes'].dtype == torch.float32
    assert sample['labels'].dtype == torch.int64
    torch.testing.assert_close(
        sample['boxes'], torch.tensor([[2.0, 3.0, 12.0, 8.0], [20.0, 0.0, 30.0, 4.0]])
    )  # the second box clipped to the image
    assert sample['labels'].tolist() == [1, 0]
    assert data.train[1]['boxes'].shape == (0, 4), 'crowd boxes left out'

    batch = next(
        iter(DataLoader(data.train, batch_size=3, collate_fn=collate_labelled))
    )
    assert batch['image'].shape == (3, 3, 20, 30)
    assert [len(b) for b in batch['boxes']] == [2, 0, 0]

    padded = open_labelled(
        'detect', pngs, tmp_path / 'coco.json', split=None, size=(40, 60)
    ).train[0]
    assert padded['image'].shape == (3, 40, 60), 'padded, not resized'
    torch.testing.assert_close(padded['boxes'], sample['boxes'])
    assert padded['valid'][:20, :30].all() and not padded['valid'][20:].any()


def test_pascal_voc_boxes(tmp_path, pngs):
    folder = tmp_path / 'voc'
    folder.mkdir()
    for name, objects in (
        ('a', [('boat', 1, 1, 10, 5)]),
        ('b', [('buoy', 5, 6, 7, 8), ('boat', 2, 2, 3, 3)]),
    ):
        items = ''.join(
            f'<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin>'
            f'<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>'
            for n, x0, y0, x1, y1 in objects
        )
        (folder / f'{name}.xml').write_text(
            f'<annotation><filename>{name}.png</filename><size><width>30</width>'
            f'<height>20</height><depth>3</depth></size>{items}</annotation>'
        )

    data = open_labelled('detect', pngs, folder, split=RandomSplit(0.5, seed=0))

    assert data.reader == 'voc'
    assert data.class_table.names == ('boat', 'buoy')
    samples = {len(d): d for d in (data.train, data.val)}
    everything = [ds[i] for ds in (data.train, data.val) for i in range(len(ds))]
    boxes = sorted(tuple(b) for s in everything for b in s['boxes'].tolist())
    assert boxes == [(0.0, 0.0, 10.0, 5.0), (1.0, 1.0, 3.0, 3.0), (4.0, 5.0, 7.0, 8.0)]
    assert len(samples) >= 1


def test_boxes_from_polygons_over_a_raster(raster_writer, vector_writer, geo, rng):
    image = raster_writer(
        'img/scene.tif', rng.integers(1, 100, (2, 64, 64), dtype=np.uint16)
    )
    polygons = [
        geo.pixel_box(2, 3, 10, 8),
        geo.pixel_box(28, 28, 40, 36),  # cut by a chip edge at column 32
        geo.to_crs(geo.pixel_box(50, 50, 54, 60), 'EPSG:3857'),  # another CRS
    ]
    three_857 = vector_writer(
        'lab/c.gpkg', polygons[2:], crs='EPSG:3857', kind=['ship']
    )
    two_utm = vector_writer('lab/ab.gpkg', polygons[:2], kind=['car', 'ship'])

    data = open_labelled(
        'detect', image, [two_utm, three_857], 'kind', split=None, size=32
    )

    assert data.reader == 'vector-labels'
    assert data.class_table.names == ('car', 'ship')
    x0, y0 = geo.ORIGIN
    top_left = (x0, y0 - 320, x0 + 320, y0)  # top-left 32 x 32 chip
    torch.testing.assert_close(
        torch.from_numpy(data.train.labels.boxes(top_left, (32, 32))[0]),
        torch.tensor([[2.0, 3.0, 10.0, 8.0], [28.0, 28.0, 32.0, 32.0]]),
    )
    # Training chips leave out the cut box: a sixth of it lies in this chip.
    sample = data.train.read(top_left)
    torch.testing.assert_close(sample['boxes'], torch.tensor([[2.0, 3.0, 10.0, 8.0]]))
    assert sample['labels'].tolist() == [0]
    corner = (x0 + 320, y0 - 640, x0 + 640, y0 - 320)
    torch.testing.assert_close(
        torch.from_numpy(data.train.labels.boxes(corner, (32, 32))[0]),
        torch.tensor([[0.0, 0.0, 8.0, 4.0], [18.0, 18.0, 22.0, 28.0]]),
        atol=1e-3,
        rtol=0,
    )
    assert data.train.read(corner)['labels'].tolist() == [1]
    # Columns 40..63, rows 0..23: the cut box only touches its left edge.
    empty = data.train.read((x0 + 400, y0 - 240, x0 + 640, y0))
    assert empty['boxes'].shape == (0, 4)
    assert empty['labels'].shape == (0,)

    folder = open_labelled('detect', image, two_utm.parent, 'kind', split=None, size=32)
    assert len(folder.train.labels) == 3, 'a folder of vector files is read whole'


def test_training_chips_leave_out_objects_mostly_outside_them(
    raster_writer, vector_writer, geo, rng
):
    # Before: a training chip kept a box for every sliver of an object it cut, so
    # on 64 px tiles of 30-50 px buildings most training boxes were slivers.
    image = raster_writer(
        'img/scene.tif', rng.integers(1, 100, (1, 64, 64), dtype=np.uint16)
    )
    labels = vector_writer(
        'lab/b.gpkg',
        [
            geo.pixel_box(20, 2, 40, 10),  # 12 of 20 columns in the first chip
            geo.pixel_box(26, 20, 46, 28),  # 6 of 20 columns
            geo.pixel_box(2, 40, 10, 48),  # elsewhere
        ],
    )
    data = open_labelled('detect', image, labels, split=None, size=32)
    x0, y0 = geo.ORIGIN
    chip = (x0, y0 - 320, x0 + 320, y0)

    train = data.train.read(chip)
    torch.testing.assert_close(
        train['boxes'], torch.tensor([[20.0, 2.0, 32.0, 10.0]]), atol=1e-3, rtol=0
    )
    assert data.train.min_object_visible == 0.5

    # Grid (validation) chips keep every part: evaluation decides by box centre.
    grid = SceneDataset(
        data.train.images, data.train.labels, data.class_table, 'detect', 32,
        sampling='grid',
    )  # fmt: skip
    torch.testing.assert_close(
        grid.read(chip)['boxes'],
        torch.tensor([[20.0, 2.0, 32.0, 10.0], [26.0, 20.0, 32.0, 28.0]]),
        atol=1e-3,
        rtol=0,
    )
    loose = SceneDataset(
        data.train.images, data.train.labels, data.class_table, 'detect', 32,
        min_object_visible=0.25,
    )  # fmt: skip
    assert len(loose.read(chip)['boxes']) == 2
    with pytest.raises(ValueError, match='min_object_visible'):
        SceneDataset(
            data.train.images, data.train.labels, data.class_table, 'detect', 32,
            min_object_visible=1.5,
        )  # fmt: skip


def test_points_cannot_be_boxes(raster_writer, vector_writer, geo):
    image = raster_writer('img/scene.tif', np.ones((1, 32, 32), np.uint8))
    points = vector_writer('lab/p.gpkg', [geo.pixel_box(1, 1, 2, 2).centroid])
    with pytest.raises(LabelError, match='points, which have no box'):
        open_labelled('detect', image, points, split=None)


def test_most_objects_in_one_window_of_vector_labels():
    rng = np.random.default_rng(0)
    # 5 small squares crowded in one 10 x 10 corner, 20 spread over 1000 x 1000.
    crowd = rng.uniform(0, 8, (5, 2))
    spread = rng.uniform(0, 1000, (20, 2)) + np.array([0, 100])
    centres = np.concatenate([crowd, spread])
    squares = [shapely.box(x, y, x + 1, y + 1) for x, y in centres]
    labels = VectorLabels(squares, np.zeros(len(squares)), CRS.from_epsg(32633))

    brute = max(
        sum(x0 <= x + 0.5 < x0 + 20 and y0 <= y + 0.5 < y0 + 20 for x, y in centres)
        for x0 in np.arange(-20, 1000, 2.0)
        for y0 in np.arange(-20, 1110, 2.0)
    )
    most = labels.most_in_window(20, 20)

    assert 5 <= most <= brute, 'the crowd counts; never more than any window holds'
    assert labels.most_in_window(2000, 2000) == 25
    assert VectorLabels([], [], CRS.from_epsg(32633)).most_in_window(5, 5) == 0
