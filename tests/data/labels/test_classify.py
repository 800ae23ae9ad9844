import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dspt_geo.data.labels import (
    ChipClassificationDataset,
    ClassTable,
    FolderSplit,
    LabelError,
    LocationClassificationDataset,
    RandomSplit,
    SampleBatch,
    collate_labelled,
    labelled_statistics,
    open_labelled,
)
from dspt_geo.errors import IncompatibleRasterError


def _chip(rng, value):
    return np.full((3, 16, 16), value, np.uint8) + rng.integers(
        0, 5, (3, 16, 16), dtype=np.uint8
    )


@pytest.fixture
def class_folders(tmp_path, raster_writer, png_writer, rng):
    """trn/val/tst folders of two classes: GeoTIFF chips and PNG chips."""
    for split, count in (('trn', 4), ('val', 2), ('tst', 1)):
        for i in range(count):
            raster_writer(f'chips/{split}/forest/f{i}.tif', _chip(rng, 50))
            png_writer(f'chips/{split}/water/w{i}.png', _chip(rng, 150))
    png_writer('chips/unlabelled/x.png', _chip(rng, 0))
    return tmp_path / 'chips'


def test_class_folders_with_split_folders(class_folders):
    data = open_labelled('classify', class_folders)

    assert data.reader == 'class-folders'
    assert data.class_table.names == ('forest', 'water')
    assert data.bands == ('band_1', 'band_2', 'band_3')
    assert data.in_chans == 3
    assert (len(data.train), len(data.val), len(data.test)) == (8, 4, 2)
    for dataset in (data.train, data.val, data.test):
        assert isinstance(dataset, ChipClassificationDataset)
        assert dataset.class_table is data.class_table
    sample = data.train[0]
    assert sample['image'].dtype == torch.float32
    assert sample['image'].shape == (3, 16, 16)
    assert sample['label'].dtype == torch.int64
    assert sample['label'].shape == ()
    assert sample['valid'].dtype == torch.bool
    # Forest chips are ~50, water chips ~150, and labels follow the folders.
    for sample in (data.train[i] for i in range(len(data.train))):
        expected = 0 if sample['image'].mean() < 100 else 1
        assert int(sample['label']) == expected

    batch = next(
        iter(DataLoader(data.train, batch_size=4, collate_fn=collate_labelled))
    )
    assert batch['image'].shape == (4, 3, 16, 16)
    assert batch['label'].shape == (4,)
    assert data.metadata()['class_table']['names'] == ['forest', 'water']


def test_split_folders_given_one_by_one(class_folders):
    data = open_labelled('classify', [class_folders / 'trn', class_folders / 'val'])

    assert (len(data.train), len(data.val)) == (8, 4)
    assert data.test is None


def test_class_folders_without_split_folders_split_at_random(tmp_path, png_writer, rng):
    for i in range(10):
        png_writer(f'c/cat/{i}.png', _chip(rng, 10))
        png_writer(f'c/dog/{i}.png', _chip(rng, 90))

    data = open_labelled('classify', tmp_path / 'c', split=RandomSplit(0.2, seed=0))

    assert (len(data.train), len(data.val)) == (16, 4)
    assert data.test is None
    with pytest.raises(LabelError, match='not in a train/val/test'):
        open_labelled('classify', tmp_path / 'c', split=FolderSplit())


def test_empty_class_folder_raises(class_folders):
    (class_folders / 'val' / 'grass').mkdir()
    with pytest.raises(LabelError, match=r"class folder 'val/grass'.* holds no chip"):
        open_labelled('classify', class_folders)


def test_resampling_chips_to_one_size(tmp_path, png_writer, rng):
    png_writer('c/a/small.png', _chip(rng, 10)[:, :8, :8])
    png_writer('c/b/large.png', _chip(rng, 10))
    data = open_labelled('classify', tmp_path / 'c', split=None)
    with pytest.raises(IncompatibleRasterError, match='differ in shape'):
        collate_labelled([data.train[0], data.train[1]])

    resized = open_labelled('classify', tmp_path / 'c', split=None, size=12)
    assert collate_labelled([resized.train[0], resized.train[1]])['image'].shape == (
        2,
        3,
        12,
        12,
    )


def test_csv_of_chip_paths_with_a_split_column(tmp_path, png_writer, rng):
    rows = ['file,landcover,split']
    for i in range(6):
        png_writer(f't/chips/{i}.png', _chip(rng, 20 * i))
        rows.append(
            f'chips/{i}.png,{"urban" if i % 2 else "crop"},{"val" if i == 5 else "train"}'
        )
    (tmp_path / 't' / 'labels.csv').write_text('\n'.join(rows))

    data = open_labelled(
        'classify', tmp_path / 't', tmp_path / 't' / 'labels.csv', 'landcover'
    )

    assert data.reader == 'chip-table'
    assert data.class_table.names == ('crop', 'urban')
    assert (len(data.train), len(data.val)) == (5, 1)
    assert int(data.val[0]['label']) == 1
    with pytest.raises(
        LabelError,
        match=r"class column 'kind' is not in .*columns are file, landcover, split",
    ):
        open_labelled('classify', tmp_path / 't', tmp_path / 't' / 'labels.csv', 'kind')


def test_points_over_a_raster(tmp_path, raster_writer, geo):
    # Pixel (row, col) holds 1000 * row + col, so a chip tells where it was cut.
    grid = (np.arange(100)[:, None] * 1000 + np.arange(100)[None, :]).astype(np.float32)
    image = raster_writer('img/scene.tif', grid[None])
    rows = ['lon,lat,crop']
    cells = [(10, 20), (50, 50), (80, 33), (2, 2)]
    for row, col in cells:
        point = geo.to_crs(
            geo.pixel_box(col, row, col + 1, row + 1).centroid, 'EPSG:4326'
        )
        rows.append(f'{point.x},{point.y},{"wheat" if row < 50 else "maize"}')
    (tmp_path / 'points.csv').write_text('\n'.join(rows))

    data = open_labelled(
        'classify', image, tmp_path / 'points.csv', 'crop', split=None, size=9
    )

    assert data.reader == 'locations'
    assert isinstance(data.train, LocationClassificationDataset)
    assert data.class_table.names == ('maize', 'wheat')
    for i, (row, col) in enumerate(cells):
        sample = data.train[i]
        assert sample['image'].shape == (1, 9, 9)
        assert sample['image'][0, 4, 4] == 1000 * row + col, 'centred on the point'
        assert int(sample['label']) == (1 if row < 50 else 0)
    corner = data.train[3]
    assert not corner['valid'][0, 0], 'off the image: not valid'
    assert corner['valid'][4, 4]


def test_points_table_errors(tmp_path, raster_writer, geo):
    image = raster_writer('img/scene.tif', np.ones((1, 50, 50), np.uint8))
    (tmp_path / 'nocol.csv').write_text('lon,lat,kind\n15,45,a\n')
    with pytest.raises(LabelError, match=r'no class column.*among its columns: kind$'):
        open_labelled('classify', image, tmp_path / 'nocol.csv', split=None)
    (tmp_path / 'blank.csv').write_text('lon,lat,class\n15,45,a\n15,45,\n')
    with pytest.raises(LabelError, match=r'1 rows .* have an empty class'):
        open_labelled('classify', image, tmp_path / 'blank.csv', split=None)
    (tmp_path / 'far.csv').write_text('lon,lat,class\n-70,10,a\n')
    with pytest.raises(LabelError, match='no label lies on an image'):
        open_labelled('classify', image, tmp_path / 'far.csv', split=None)
    (tmp_path / 'xy.csv').write_text('x,y,class\n500100,4999900,a\n')
    with pytest.raises(LabelError, match='has no CRS'):
        open_labelled('classify', image, tmp_path / 'xy.csv', split=None)
    data = open_labelled(
        'classify', image, tmp_path / 'xy.csv', split=None, labels_crs=geo.UTM, size=4
    )
    assert len(data.train) == 1


def test_chip_statistics_use_valid_pixels(tmp_path, raster_writer):
    data = np.full((1, 8, 8), 10, np.int16)
    data[0, :4] = -1  # nodata
    raster_writer('c/a/one.tif', data, nodata=-1)
    two = data.copy()
    two[0, 4:] = 30
    raster_writer('c/b/two.tif', two, nodata=-1)
    opened = open_labelled('classify', tmp_path / 'c', split=None)

    stats = labelled_statistics(opened)

    assert stats.mean == pytest.approx((20.0,))
    assert stats.pixels == 64


def test_chips_held_in_memory_read_as_from_their_files(tmp_path, raster_writer, rng):
    from PIL import Image

    paths = []
    for i in range(3):  # uint16 GeoTIFFs with nodata rows, then RGB JPEGs
        data = rng.integers(1, 4000, (3, 12, 12), dtype=np.uint16)
        data[:, i, :] = 0
        paths.append(str(raster_writer(f'c/u{i}.tif', data, nodata=0)))
    for i in range(3):
        path = tmp_path / f'j/{i}.jpg'
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    table = ClassTable(names=('a', 'b'))
    for chosen, size in ((paths[:3], None), (paths[3:], None), (paths, 8)):
        labels = [k % 2 for k in range(len(chosen))]
        files = ChipClassificationDataset(chosen, labels, table, size=size)
        memory = ChipClassificationDataset(chosen, labels, table, size=size)
        need = memory.memory_bytes()
        assert need is not None
        assert not memory.hold_in_memory(need - 1) and memory.memory is None
        assert memory.hold_in_memory(need)
        for k in range(len(chosen)):
            a, b = files[k], memory[k]
            assert a.keys() == b.keys()
            for key in a:
                assert a[key].dtype == b[key].dtype
                assert torch.equal(a[key], b[key]), (chosen[k], key)
        if chosen[0].endswith('.tif') and size is None:
            assert not memory[0]['valid'][0].any()  # the first chip's nodata row
        memory[0]['image'].zero_()  # samples are copies, not views of the memory
        assert torch.equal(memory[0]['image'], files[0]['image'])


def test_chips_of_several_sizes_stay_on_file(tmp_path, png_writer, rng):
    paths = [
        str(png_writer('s/a.png', _chip(rng, 10))),
        str(png_writer('s/b.png', np.zeros((3, 20, 20), np.uint8))),
    ]
    dataset = ChipClassificationDataset(paths, [0, 1], ClassTable(names=('a', 'b')))

    assert not dataset.hold_in_memory(2**30)
    assert dataset.memory is None
    assert dataset[1]['image'].shape == (3, 20, 20)


def test_chips_held_in_memory_come_a_batch_at_a_time(tmp_path, raster_writer, rng):
    paths = []
    for i in range(10):
        data = rng.integers(1, 4000, (2, 8, 8), dtype=np.uint16)
        data[:, i % 8, :] = 0
        paths.append(str(raster_writer(f'b/{i}.tif', data, nodata=0)))
    labels = [k % 3 for k in range(10)]
    table = ClassTable(names=('a', 'b', 'c'))
    files = ChipClassificationDataset(paths, labels, table)
    memory = ChipClassificationDataset(paths, labels, table)
    assert memory.hold_in_memory(2**20)
    order = [7, 2, 9, 0, 4, 4, 1, 8, 3, 5, 6]

    def batches(dataset):
        return list(
            DataLoader(
                dataset, batch_size=4, sampler=order, collate_fn=collate_labelled
            )
        )

    assert isinstance(memory.__getitems__([3, 1]), SampleBatch)
    assert not isinstance(files.__getitems__([3, 1]), SampleBatch)
    for a, b in zip(batches(files), batches(memory), strict=True):
        assert a.keys() == b.keys() == {'image', 'label', 'valid'}
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape
            assert torch.equal(a[key], b[key]), key
    # A batch is a copy, and its samples are the dataset's samples.
    held = memory.__getitems__([0, 5])
    assert len(held) == 2 and torch.equal(held[1]['image'], files[5]['image'])
    assert held[-1]['label'] == files[5]['label']
    collate_labelled(held)['image'].zero_()
    assert torch.equal(memory[0]['image'], files[0]['image'])
