"""Few-label runs: a seeded share of the training labels, per class or per image.

Also the class-stratified random split and the split lists a run writes.
"""

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dspt_geo.data.labels import (
    BlockSplit,
    RandomSplit,
    open_labelled,
    write_split_lists,
)

#: Chips per class of the class-folder fixture: unbalanced, one class of three.
SIZES = {'a': 20, 'b': 10, 'c': 3}


@pytest.fixture
def folders(png_writer, rng, tmp_path) -> Path:
    """Flat class folders (no split folders) of 8 px PNG chips."""
    for value, (name, count) in enumerate(SIZES.items()):
        for i in range(count):
            data = np.full((3, 8, 8), 40 * value, np.uint8) + rng.integers(
                0, 5, (3, 8, 8), dtype=np.uint8
            )
            png_writer(f'chips/{name}/{i:02d}.png', data)
    return tmp_path / 'chips'


def _per_class(dataset) -> dict[str, int]:
    names = dataset.class_table.names
    return dict(Counter(names[label] for label in dataset.labels))


@pytest.mark.parametrize(
    ('fraction', 'expected'),
    [(0.2, {'a': 4, 'b': 2, 'c': 1}), (0.5, {'a': 10, 'b': 5, 'c': 2})],
)
def test_the_fraction_is_kept_per_class(folders, fraction, expected):
    data = open_labelled('classify', folders, split=None, label_fraction=fraction)

    assert _per_class(data.train) == expected
    assert data.val is None


def test_every_class_keeps_at_least_one_label(folders, caplog):
    with caplog.at_level(logging.INFO, logger='dspt_geo'):
        data = open_labelled('classify', folders, split=None, label_fraction=0.01)

    assert _per_class(data.train) == {'a': 1, 'b': 1, 'c': 1}
    assert 'training keeps 3 of 33 chips; per class: a 1/20, b 1/10, c 1/3' in (
        caplog.text
    )


def test_the_draw_follows_the_label_seed(folders):
    def draw(**kwargs):
        opened = open_labelled(
            'classify', folders, split=None, label_fraction=0.3, **kwargs
        )
        return opened.train.paths

    assert draw(label_seed=1) == draw(label_seed=1)
    assert draw(label_seed=1) != draw(label_seed=2)
    # Without a label seed, the run's seed draws.
    assert draw(seed=2) == draw(label_seed=2)
    assert draw(seed=2, label_seed=1) == draw(label_seed=1)


def test_validation_keeps_all_its_labels(folders):
    split = RandomSplit(val_fraction=0.2, seed=0)
    full = open_labelled('classify', folders, split=split)
    few = open_labelled('classify', folders, split=split, label_fraction=0.25)

    assert few.val.paths == full.val.paths
    assert set(few.train.paths) < set(full.train.paths)
    assert _per_class(few.train) == {'a': 4, 'b': 2, 'c': 1}  # of 16, 8, 2


def test_the_random_split_is_stratified_by_class(folders):
    data = open_labelled('classify', folders, split=RandomSplit(val_fraction=0.2))

    assert _per_class(data.val) == {'a': 4, 'b': 2, 'c': 1}
    assert _per_class(data.train) == {'a': 16, 'b': 8, 'c': 2}


def test_mask_chips_keep_a_share_of_images(png_writer, rng, caplog):
    for i in range(10):
        png_writer(f'img/t{i}.png', rng.integers(0, 255, (3, 8, 8), dtype=np.uint8))
        mask = png_writer(f'mask/t{i}.png', rng.integers(0, 3, (8, 8), dtype=np.uint8))
    images, masks = mask.parent.parent / 'img', mask.parent

    with caplog.at_level(logging.INFO, logger='dspt_geo'):
        data = open_labelled('segment', images, masks, split=None, label_fraction=0.3)
    other = open_labelled(
        'segment', images, masks, split=None, label_fraction=0.3, label_seed=4
    )

    assert data.reader == 'mask-chips'
    assert len(data.train) == len(other.train) == 3
    assert set(data.train.paths) != set(other.train.paths)
    assert [Path(p).name for p in data.train.paths] == [
        Path(p).name for p in data.train.mask_paths
    ]
    assert 'training keeps 3 of 10 mask chips (images)' in caplog.text


def test_scenes_keep_a_share_of_regions(raster_writer, rng, tmp_path):
    image = raster_writer('img/scene.tif', rng.integers(1, 999, (3, 64, 64), np.uint16))
    labels = raster_writer('lab/classes.tif', rng.integers(1, 4, (64, 64), np.uint8))

    full = open_labelled('segment', image, labels, split=None, size=16)
    few = open_labelled(
        'segment', image, labels, split=None, size=16, label_fraction=0.25
    )

    area = sum(g.area for g in full.train.cells.geometry)
    # Blocks of 32 px (two chips): one of the four trains.
    assert sum(g.area for g in few.train.cells.geometry) == pytest.approx(area / 4)
    assert len(few.train) < len(full.train)
    lists = write_split_lists(few, tmp_path / 'splits')
    (line,) = lists['train'].read_text().splitlines()
    path, bounds = line.split('\t')
    assert Path(path).name == 'scene.tif'
    left, bottom, right, top = map(float, bounds.split())
    assert (right - left, top - bottom) == (320.0, 320.0)


def test_the_split_lists_name_each_item(folders, tmp_path):
    data = open_labelled(
        'classify', folders, split=RandomSplit(val_fraction=0.2), label_fraction=0.5
    )

    written = write_split_lists(data, tmp_path / 'splits')

    assert set(written) == {'train', 'val'}
    assert not (tmp_path / 'splits' / 'test.txt').exists()
    for name, dataset in (('train', data.train), ('val', data.val)):
        rows = [line.split('\t') for line in written[name].read_text().splitlines()]
        assert [path for path, _ in rows] == dataset.paths
        assert all(Path(path).parent.name == label for path, label in rows)
    assert len(rows) == 7  # val: 4 + 2 + 1


def test_a_fraction_outside_0_1_is_refused(folders):
    with pytest.raises(ValueError, match=r'label fraction must be in \(0, 1\]'):
        open_labelled('classify', folders, label_fraction=0)


def test_a_block_split_keeps_a_share_of_its_training_blocks(raster_writer, rng):
    image = raster_writer('img/scene.tif', rng.integers(1, 999, (3, 64, 64), np.uint16))
    labels = raster_writer('lab/classes.tif', rng.integers(1, 4, (64, 64), np.uint8))
    split = BlockSplit(size=160.0, val_fraction=0.25)  # 16 blocks of 16 px

    full = open_labelled('segment', image, labels, split=split, size=16)
    few = open_labelled(
        'segment', image, labels, split=split, size=16, label_fraction=0.5
    )

    assert (len(full.train.cells), len(full.val.cells)) == (12, 4)
    assert (len(few.train.cells), len(few.val.cells)) == (6, 4)
    kept = {g.bounds for g in few.train.cells.geometry}
    assert kept < {g.bounds for g in full.train.cells.geometry}
    assert not kept & {g.bounds for g in few.val.cells.geometry}
