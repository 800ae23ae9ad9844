import numpy as np
import pytest
import rasterio
import torch
from pyproj import Transformer
from rasterio.warp import transform_bounds

from dspt_geo.data.labels import (
    ChipSegmentationDataset,
    ClassTable,
    LabelError,
    SceneDataset,
    collate_labelled,
    open_labelled,
)

#: The image of most tests: 64 x 64 pixels of 10 m from (500000, 5000000), EPSG:32633.
BOUNDS = (500_000.0, 4_999_360.0, 500_640.0, 5_000_000.0)


@pytest.fixture
def image(raster_writer, rng):
    data = rng.integers(1, 1000, (3, 64, 64), dtype=np.uint16)
    data[:, :, :4] = 0  # nodata strip
    return raster_writer('img/scene.tif', data, nodata=0)


def _classes(mask, table):
    return set(mask.unique().tolist()) - {table.ignore_index}


def test_aligned_coarser_label_raster_is_repeated_exactly(image, raster_writer, rng):
    labels = rng.choice(np.array([3, 7, 9], np.uint8), (32, 32))
    labels[0, 10] = 0  # nodata: no label
    path = raster_writer('lab/classes.tif', labels, res=20.0, nodata=0)

    data = open_labelled('segment', image, path, split=None, size=64)

    assert data.reader == 'label-rasters'
    assert data.class_table.values == (3, 7, 9)
    assert data.class_table.names == ('3', '7', '9')
    sample = data.train.read(BOUNDS)
    assert sample['mask'].dtype == torch.int64
    assert sample['mask'].shape == (64, 64)
    expected = np.searchsorted([3, 7, 9], np.kron(labels, np.ones((2, 2), np.uint8)))
    expected[:, :4] = 255  # where the image has no data
    expected[0:2, 20:22] = 255  # where the labels have no data
    np.testing.assert_array_equal(sample['mask'].numpy(), expected)
    np.testing.assert_array_equal(sample['valid'].numpy()[:, :4], False)
    # Normalisation statistics come from the images' sensor dataset.
    stats = data.statistics(num_samples=4)
    assert stats.bands == data.bands
    assert all(1 <= m < 1000 for m in stats.mean), 'nodata left out'


def test_label_rasters_inside_the_image_folder_are_not_images(image, raster_writer):
    path = raster_writer('img/labels/classes.tif', np.full((64, 64), 4, np.uint8))

    data = open_labelled('segment', image.parent, path.parent, split=None, size=64)

    assert data.in_chans == 3
    assert data.images.group.rasters[0].path == str(image)
    assert data.class_table.values == (4,)


def test_label_raster_in_another_crs_is_resampled_by_nearest(image, raster_writer, rng):
    west, south, east, north = transform_bounds('EPSG:32633', 'EPSG:4326', *BOUNDS)
    res = 0.0003  # about 23 x 33 m
    cols = int((east - west) / res) + 4
    rows = int((north - south) / res) + 4
    labels = rng.choice(np.array([3, 7, 9], np.uint8), (rows, cols))
    labels[:3, :3] = 255  # nodata
    origin = (west - 2 * res, north + 2 * res)
    path = raster_writer(
        'lab/wgs84.tif', labels, crs='EPSG:4326', origin=origin, res=res, nodata=255
    )

    data = open_labelled('segment', image, path, split=None, size=64)
    mask = data.train.read(BOUNDS)['mask']

    assert _classes(mask, data.class_table) == {0, 1, 2}, 'no invented class'
    # Each pixel holds the label under its centre.
    to_wgs84 = Transformer.from_crs('EPSG:32633', 'EPSG:4326', always_xy=True)
    cols_utm, rows_utm = np.meshgrid(np.arange(64), np.arange(64))
    lon, lat = to_wgs84.transform(
        500_000 + (cols_utm + 0.5) * 10, 5_000_000 - (rows_utm + 0.5) * 10
    )
    expected = labels[
        np.floor((origin[1] - lat) / res).astype(int),
        np.floor((lon - origin[0]) / res).astype(int),
    ]
    expected = np.searchsorted([3, 7, 9], expected)
    labelled = mask.numpy() != 255
    agreement = (mask.numpy() == expected)[labelled].mean()
    assert agreement > 0.97


def test_labels_covering_part_of_the_image(image, raster_writer):
    labels = np.ones((20, 20), np.uint8)
    path = raster_writer('lab/part.tif', labels, origin=(500_200.0, 4_999_800.0))

    data = open_labelled('segment', image, path, split=None, size=16, length=10)

    mask = data.train.read(BOUNDS)['mask'].numpy()
    assert (mask != 255).sum() == 400
    assert (mask[20:40, 20:40] == 0).all()
    # Training chips are drawn where labels are.
    assert data.train.cells.total_bounds.tolist() == [
        500_200.0,
        4_999_600.0,
        500_400.0,
        4_999_800.0,
    ]
    assert all((s['mask'] != 255).all() for s in data.train)


def test_polygons_in_wgs84_over_a_utm_image(image, vector_writer, geo):
    houses = [geo.pixel_box(10, 5, 20, 12), geo.pixel_box(40, 30, 44, 60)]
    fields = [geo.pixel_box(30, 0, 38, 8)]
    path = vector_writer(
        'lab/polygons.geojson',
        [geo.to_crs(g, 'EPSG:4326') for g in houses + fields],
        crs='EPSG:4326',
        landuse=['house', 'house', 'field'],
    )

    data = open_labelled('segment', image, path, 'landuse', split=None, size=64)

    assert data.reader == 'vector-labels'
    table = data.class_table
    assert table.names == ('background', 'field', 'house')
    mask = data.train.read(BOUNDS)['mask'].numpy()
    expected = np.zeros((64, 64), np.int64)
    expected[5:12, 10:20] = 2
    expected[30:60, 40:44] = 2
    expected[0:8, 30:38] = 1
    expected[:, :4] = 255
    np.testing.assert_array_equal(mask, expected)

    unlabelled_background = open_labelled(
        'segment', image, path, 'landuse', split=None, size=64, background=None
    )
    mask = unlabelled_background.train.read(BOUNDS)['mask'].numpy()
    assert unlabelled_background.class_table.names == ('field', 'house')
    assert set(np.unique(mask)) == {0, 1, 255}
    assert (mask == 1).sum() == 70 + 120


def test_training_chips_filter_and_batch(image, vector_writer, geo):
    path = vector_writer('lab/one.gpkg', [geo.pixel_box(50, 50, 60, 60)])

    data = open_labelled(
        'segment', image, path, split=None, size=16, length=6, positive_fraction=1.0
    )

    assert data.class_table.names == ('background', 'one'), 'named after one.gpkg'
    samples = list(data.train)
    assert len(samples) == 6
    assert all((s['mask'] == 1).any() for s in samples), 'every chip holds the object'
    assert all(s['valid'].float().mean() >= 0.5 for s in samples)
    batch = collate_labelled(samples)
    assert batch['mask'].shape == (6, 16, 16)
    assert batch['image'].shape == (6, 3, 16, 16)


def test_colour_mask_chips_with_a_colour_table(tmp_path, png_writer, rng):
    (tmp_path / 'colours.csv').write_text(
        'name,colour\nwater,#0000ff\nbuilding,#ff0000\n'
    )
    for split in ('train', 'val'):
        for i in range(2):
            png_writer(
                f'images/{split}/tile{i}.png',
                rng.integers(0, 255, (3, 8, 8), dtype=np.uint8),
            )
            mask = np.zeros((4, 8, 8), np.uint8)
            mask[2, :4] = 255  # blue: water
            mask[0, 4:] = 255  # red: building
            mask[3] = 255
            mask[3, 7, 7] = 0  # transparent: unlabelled
            png_writer(f'masks/{split}/tile{i}_mask.png', mask)

    data = open_labelled(
        'segment',
        tmp_path / 'images',
        tmp_path / 'masks',
        class_table=tmp_path / 'colours.csv',
    )

    assert data.reader == 'mask-chips'
    assert isinstance(data.train, ChipSegmentationDataset)
    assert (len(data.train), len(data.val)) == (2, 2)
    mask = data.val[0]['mask'].numpy()
    assert (mask[:4] == 0).all()
    assert (mask[4:7] == 1).all()
    assert mask[7, 7] == 255

    wrong = ClassTable(names=('water',), colours=('#0000ff',))
    with pytest.raises(
        LabelError, match=r'colours #ff0000 that are not in the class table'
    ):
        open_labelled(
            'segment', tmp_path / 'images', tmp_path / 'masks', class_table=wrong
        ).train[0]
    with pytest.raises(LabelError, match='need a class/colour table'):
        open_labelled('segment', tmp_path / 'images', tmp_path / 'masks')


def test_colour_coded_label_raster(image, raster_writer):
    rgb = np.zeros((3, 64, 64), np.uint8)
    rgb[1, :32] = 128  # green: forest
    rgb[2, 32:] = 255  # blue: water
    path = raster_writer('lab/rgb.tif', rgb)
    table = ClassTable(names=('forest', 'water'), colours=('#008000', '#0000ff'))

    data = open_labelled('segment', image, path, class_table=table, split=None, size=64)

    mask = data.train.read(BOUNDS)['mask'].numpy()
    assert (mask[:32, 4:] == 0).all()
    assert (mask[32:, 4:] == 1).all()


def test_mask_values_outside_the_class_table_raise(image, raster_writer):
    labels = np.ones((64, 64), np.uint8)
    labels[10, 10] = 6
    path = raster_writer('lab/classes.tif', labels)
    table = ClassTable(names=('a', 'b'), values=(1, 2))

    with pytest.raises(LabelError, match=r'values 6 that are not in the class table'):
        open_labelled('segment', image, path, class_table=table, split=None)


def test_labels_outside_every_image_raise(image, raster_writer, vector_writer, geo):
    far = raster_writer(
        'lab/far.tif', np.ones((8, 8), np.uint8), origin=(600_000.0, 5_000_000.0)
    )
    with pytest.raises(LabelError, match='lie outside every image'):
        open_labelled('segment', image, far, split=None)
    far_vector = vector_writer('lab/far.gpkg', [geo.pixel_box(1000, 0, 1010, 10)])
    with pytest.raises(LabelError, match=r'no label lies on an image.*images span'):
        open_labelled('segment', image, far_vector, split=None)


@pytest.mark.filterwarnings('ignore::UserWarning')
def test_labels_whose_crs_cannot_be_matched_raise(
    image, raster_writer, vector_writer, geo, tmp_path
):
    no_crs = vector_writer(
        'lab/nocrs.shp', [geo.pixel_box(0, 0, 5, 5)], crs=None, cls=[1]
    )
    with pytest.raises(LabelError, match='has no CRS'):
        open_labelled('segment', image, no_crs, 'cls', split=None)
    # UTM metres in a GeoJSON, which always says WGS 84.
    utm_geojson = vector_writer(
        'lab/utm.geojson', [geo.pixel_box(0, 0, 5, 5)], crs=None
    )
    with pytest.raises(LabelError, match='probably declares the wrong CRS'):
        open_labelled('segment', image, utm_geojson, split=None)
    unreferenced = tmp_path / 'lab' / 'plain.tif'
    with rasterio.open(
        unreferenced, 'w', driver='GTiff', width=8, height=8, count=1, dtype='uint8'
    ) as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
    with pytest.raises(
        LabelError, match='cannot be matched to the images: they are not georef'
    ):
        open_labelled('segment', image, unreferenced, split=None)
    good = raster_writer('lab/good.tif', np.ones((8, 8), np.uint8))
    with pytest.raises(LabelError, match='cannot be matched to the images: has no CRS'):
        open_labelled('segment', image, [unreferenced, good], split=None)


def test_missing_class_column_names_the_columns(image, vector_writer, geo):
    path = vector_writer(
        'lab/p.gpkg', [geo.pixel_box(0, 0, 5, 5)], kind=['a'], area=[1.0]
    )
    with pytest.raises(
        LabelError, match=r"class column 'class' is not in .*columns are kind, area"
    ):
        open_labelled('segment', image, path, 'class', split=None)


def test_scene_dataset_pickles_for_workers(image, raster_writer):
    import pickle

    path = raster_writer('lab/classes.tif', np.full((64, 64), 2, np.uint8))
    data = open_labelled('segment', image, path, split=None, size=16, length=3)
    copy = pickle.loads(pickle.dumps(data.train))

    assert isinstance(copy, SceneDataset)
    assert [s['mask'].shape for s in copy] == [(16, 16)] * 3
