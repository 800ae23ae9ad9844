import numpy as np
import pytest
import shapely

from dspt_geo.data.labels import (
    BlockSplit,
    LabelError,
    RandomSplit,
    assign_blocks,
    open_labelled,
)
from dspt_geo.data.labels.split import random_assign


def test_block_draw_is_deterministic_and_exclusive():
    keys = [(x, y) for x in range(10) for y in range(10)]

    first = assign_blocks(keys, val_fraction=0.2, test_fraction=0.1, seed=3)
    again = assign_blocks(
        list(reversed(keys)) + keys, val_fraction=0.2, test_fraction=0.1, seed=3
    )
    other = assign_blocks(keys, val_fraction=0.2, test_fraction=0.1, seed=4)

    assert first == again
    assert first != other
    assert set(first) == set(keys)
    counts = {s: list(first.values()).count(s) for s in ('train', 'val', 'test')}
    assert counts == {'train': 70, 'val': 20, 'test': 10}


def test_small_draws_keep_one_block_for_training_and_one_for_validation():
    assert sorted(assign_blocks([(0, 0), (0, 1)], 0.1).values()) == ['train', 'val']
    assert list(assign_blocks([(0, 0)], 0.5).values()) == ['train']
    assert random_assign(5, 0.4, seed=1).count('val') == 2


def test_bad_fractions_raise():
    with pytest.raises(ValueError, match='leave some data'):
        BlockSplit(size=10, val_fraction=0.6, test_fraction=0.4)
    with pytest.raises(ValueError, match='positive'):
        BlockSplit(size=0)


def _scene(raster_writer, vector_writer, geo, rng):
    image = raster_writer(
        's/img.tif', rng.integers(1, 200, (2, 128, 128), dtype=np.uint16)
    )
    polygons = [
        geo.pixel_box(c, r, c + 6, r + 6)
        for c in range(0, 120, 20)
        for r in range(0, 120, 20)
    ]
    labels = vector_writer('s/labels.gpkg', polygons, kind=['hut'] * len(polygons))
    return image, labels


def test_scene_block_split_separates_train_and_val_chips(
    raster_writer, vector_writer, geo, rng
):
    image, labels = _scene(raster_writer, vector_writer, geo, rng)
    split = BlockSplit(size=320.0, val_fraction=0.25, seed=1)  # 32 px blocks

    data = open_labelled('segment', image, labels, 'kind', split, size=16, length=40)
    again = open_labelled('segment', image, labels, 'kind', split, size=16, length=40)

    train_area = shapely.union_all(data.train.cells.geometry.to_numpy())
    val_area = shapely.union_all(data.val.cells.geometry.to_numpy())
    assert train_area.intersection(val_area).area == 0
    assert train_area.union(val_area).area == pytest.approx(1280.0**2)

    def blocks(dataset):
        x0, y0 = geo.ORIGIN  # the grid starts at the image's top-left corner
        return {
            ((g.centroid.x - x0) // 320, (g.centroid.y - y0) // 320)
            for g in dataset.cells.geometry
        }

    assert not blocks(data.train) & blocks(data.val), 'no block in both splits'
    assert len(blocks(data.train)) + len(blocks(data.val)) == 16
    assert (blocks(data.train), blocks(data.val)) == (
        blocks(again.train),
        blocks(again.val),
    ), 'deterministic'

    # Every chip lies inside its split's area, training and validation alike.
    xres = data.images.res[0]
    for dataset, area in ((data.train, train_area), (data.val, val_area)):
        queries = (
            dataset.sampler.queries()
            if dataset.sampling == 'random'
            else iter(dataset.sampler)
        )
        for _, (x, y, _t) in zip(range(30), queries, strict=False):
            chip = shapely.box(
                x.start, y.start, x.start + 16 * xres, y.start + 16 * xres
            )
            if dataset.sampling == 'grid':
                chip = shapely.box(*dataset._inside_cell(x.start, y.start))
            assert area.buffer(1e-6).contains(chip)
    assert len(list(data.val)) > 0
    assert len(list(data.train)) == 40


def test_unknown_split_raises(raster_writer, vector_writer, geo, rng):
    image, labels = _scene(raster_writer, vector_writer, geo, rng)
    with pytest.raises(ValueError, match='split must be'):
        open_labelled('segment', image, labels, 'kind', 'blocks', size=16)


def test_random_split_is_refused_for_scenes(raster_writer, vector_writer, geo, rng):
    image, labels = _scene(raster_writer, vector_writer, geo, rng)
    with pytest.raises(LabelError, match='split by area'):
        open_labelled('segment', image, labels, 'kind', RandomSplit(), size=16)
