"""Segmentation and detection chips are cut into windows, never resampled."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from dspt_geo.data.labels import ChipSegmentationDataset, ClassTable, open_labelled
from dspt_geo.data.labels.windows import chip_windows
from dspt_geo.train.finetune_data import evaluation_dataset


@pytest.mark.parametrize(
    ('shape', 'size'),
    [((100, 70), (32, 32)), ((20, 20), (32, 32)), ((64, 33), (16, 8))],
)
def test_chip_windows_own_every_pixel_once(shape, size):
    windows = chip_windows([shape], size)

    owned = np.zeros(shape, int)
    for window in windows:
        assert window.chip == 0
        assert window.row + min(size[0], shape[0]) <= shape[0]
        assert window.col + min(size[1], shape[1]) <= shape[1]
        x0, y0, x1, y1 = window.owned
        owned[window.row + y0 : window.row + y1, window.col + x0 : window.col + x1] += 1
    assert (owned == 1).all()


def write_chips(mask_files, root, rng, shapes):
    """JPEG image chips and palette PNG masks (values 0..3) of the given sizes."""
    masks = {}
    for i, (height, width) in enumerate(shapes):
        (root / 'images').mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / 'images' / f't{i}.jpg', quality=95)
        masks[i] = rng.integers(0, 4, (height, width))
        mask_files.palette_png(root / 'masks' / f't{i}.png', masks[i])
    return masks


def test_mask_chips_are_cut_into_windows_and_padded(mask_files, tmp_path, rng, caplog):
    masks = write_chips(mask_files, tmp_path, rng, [(65, 80), (20, 24)])
    caplog.set_level(logging.INFO)

    data = open_labelled(
        'segment', tmp_path / 'images', tmp_path / 'masks', split=None, size=32
    )

    assert isinstance(data.train, ChipSegmentationDataset)
    # 65 x 80: 3 x 3 windows; 20 x 24: one window, padded.
    assert len(data.train) == 9 + 1
    assert data.class_table.names == ('0', '1', '2', '3')
    assert data.class_table.colours == tuple(mask_files.PALETTE[v] for v in range(4))
    last = data.train[8]  # flush with the far corner of chip 0
    np.testing.assert_array_equal(last['mask'].numpy(), masks[0][33:65, 48:80])
    small = data.train[9]
    assert small['image'].shape == (3, 32, 32)
    np.testing.assert_array_equal(small['mask'][:20, :24].numpy(), masks[1])
    assert (small['mask'][20:] == 255).all() and (small['mask'][:, 24:] == 255).all()
    assert not small['valid'][20:].any() and small['valid'][:20, :24].all()
    assert 'skipping' not in caplog.text, 'mask chips are used, not skipped'
    assert 'cut into 10 windows of 32 x 32 px' in caplog.text
    assert '1 smaller in a side and padded' in caplog.text

    scored = evaluation_dataset(data.train)
    counted = sum(int((scored[i]['mask'] != 255).sum()) for i in range(len(scored)))
    assert counted == 65 * 80 + 20 * 24, 'evaluation scores every pixel once'


def test_palette_masks_are_matched_to_a_class_table_by_colour(
    mask_files, tmp_path, rng
):
    masks = write_chips(mask_files, tmp_path, rng, [(16, 16)])
    # The table lists the classes in another order than the palette.
    order = {'water': 3, 'trees': 2, 'houses': 1, 'other': 0}
    (tmp_path / 'classes.json').write_text(
        json.dumps(
            [
                {
                    'name': name,
                    'colour': '#{:02x}{:02x}{:02x}'.format(*mask_files.PALETTE[value]),
                }
                for name, value in order.items()
            ]
        )
    )

    data = open_labelled(
        'segment',
        tmp_path / 'images',
        tmp_path / 'masks',
        class_table=tmp_path / 'classes.json',
        split=None,
        size=16,
    )

    mask = data.train[0]['mask'].numpy()
    names = np.array(data.class_table.names)[mask]
    by_value = np.array(list(order))[[3 - v for v in range(4)]]  # value -> name
    np.testing.assert_array_equal(names, by_value[masks[0]])


def test_palette_masks_named_by_a_table_in_value_order(mask_files, tmp_path, rng):
    masks = write_chips(mask_files, tmp_path, rng, [(16, 16)])
    (tmp_path / 'names.csv').write_text('name\nother\nhouses\ntrees\nwater\n')

    data = open_labelled(
        'segment',
        tmp_path / 'images',
        tmp_path / 'masks',
        class_table=tmp_path / 'names.csv',
        split=None,
    )

    assert data.class_table.names == ('other', 'houses', 'trees', 'water')
    np.testing.assert_array_equal(data.train[0]['mask'].numpy(), masks[0])


def test_rgb_table_reads_a_palette_mask_through_its_palette(mask_files, tmp_path, rng):
    masks = write_chips(mask_files, tmp_path, rng, [(8, 8)])
    table = ClassTable(
        names=('a', 'b', 'c', 'd'),
        colours=tuple(mask_files.PALETTE[v] for v in (3, 2, 1, 0)),
    )
    dataset = ChipSegmentationDataset(
        [str(tmp_path / 'images' / 't0.jpg')],
        [str(tmp_path / 'masks' / 't0.png')],
        table,
        colour_coded=True,
    )
    np.testing.assert_array_equal(dataset[0]['mask'].numpy(), 3 - masks[0])


def test_detection_chips_are_cut_into_windows(tmp_path, png_writer, rng):
    png_writer('images/a.png', rng.integers(0, 255, (3, 40, 50), dtype=np.uint8))
    coco = {
        'images': [{'id': 1, 'file_name': 'a.png', 'width': 50, 'height': 40}],
        'annotations': [
            {'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [2, 3, 6, 4]},
            {'id': 2, 'image_id': 1, 'category_id': 1, 'bbox': [40, 30, 8, 6]},
        ],
        'categories': [{'id': 1, 'name': 'car'}],
    }
    (tmp_path / 'coco.json').write_text(json.dumps(coco))

    data = open_labelled(
        'detect', tmp_path / 'images', tmp_path / 'coco.json', split=None, size=32
    )

    assert len(data.train) == 4  # rows at 0, 8; columns at 0, 18
    first, last = data.train[0], data.train[3]
    torch.testing.assert_close(first['boxes'], torch.tensor([[2.0, 3.0, 8.0, 7.0]]))
    torch.testing.assert_close(last['boxes'], torch.tensor([[22.0, 22.0, 30.0, 28.0]]))
    scored = evaluation_dataset(data.train)
    boxes = sum(len(scored[i]['boxes']) for i in range(len(scored)))
    assert boxes == 2, 'each box scored in one window'
    assert scored[3]['owned'].tolist() == [7, 12, 32, 32]


def test_classification_chips_are_resized_whole(tmp_path, png_writer, rng, caplog):
    for name in ('a', 'b'):
        png_writer(f'c/{name}/1.png', rng.integers(0, 255, (3, 20, 30), dtype=np.uint8))

    data = open_labelled('classify', tmp_path / 'c', split=None, size=16)

    assert data.train[0]['image'].shape == (3, 16, 16)
    assert len(data.train) == 2
    assert 'resized whole to 16 x 16 px' in caplog.text


def test_a_file_really_skipped_is_reported_once(
    raster_writer, vector_writer, geo, png_writer, rng, caplog
):
    raster_writer('img/scene.tif', rng.integers(1, 255, (3, 64, 64), dtype=np.uint8))
    png_writer('img/photo.png', rng.integers(0, 255, (3, 16, 16), dtype=np.uint8))
    path = vector_writer('lab/fields.gpkg', [geo.pixel_box(10, 10, 30, 30)])

    data = open_labelled('segment', path.parents[1] / 'img', path, split=None, size=32)

    assert data.class_table.names == ('background', 'fields')
    skipped = [r.message for r in caplog.records if 'skipping' in r.message]
    assert len(skipped) == 1 and 'photo.png' in skipped[0], caplog.text
