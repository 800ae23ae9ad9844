"""Class names and colours of integer masks from their sidecars and palettes."""

from pathlib import Path

import numpy as np
import pytest
import rasterio

from dspt_geo.data.labels import open_labelled
from dspt_geo.data.labels.sidecars import mask_classes, mask_palette, mask_table
from dspt_geo.errors import LabelError


def int_tif(path: Path, values: np.ndarray, colormap: dict | None = None) -> Path:
    """A one-band uint8 GeoTIFF mask, with a colour map if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        'w',
        driver='GTiff',
        width=values.shape[1],
        height=values.shape[0],
        count=1,
        dtype='uint8',
        crs='EPSG:32633',
        transform=rasterio.transform.from_origin(500_000, 5_000_000, 10, 10),
    ) as dst:
        dst.write(values.astype(np.uint8), 1)
        if colormap:
            dst.write_colormap(1, colormap)
    return path


def test_palette_png_gives_its_palette(mask_files, tmp_path):
    path = mask_files.palette_png(tmp_path / 'm.png', np.array([[0, 1], [2, 3]]))
    palette = mask_palette(str(path))
    assert {k: palette[k] for k in mask_files.PALETTE} == mask_files.PALETTE
    found = mask_classes(str(path))
    assert found.names == {}
    assert found.source == 'colour table'


def test_rat_names_and_colours_come_first(mask_files, tmp_path):
    path = mask_files.palette_png(tmp_path / 'm.png', np.array([[0, 1], [2, 3]]))
    mask_files.aux_xml_rat(
        path, [(1, 'water', (0, 0, 255)), (3, 'forest', (0, 128, 0))]
    )
    mask_files.qml(path, [(1, 'lake', '#ff0000')])
    found = mask_classes(str(path))
    assert found.names == {1: 'water', 3: 'forest'}
    assert found.colours == {1: (0, 0, 255), 3: (0, 128, 0)}
    assert found.source.endswith('m.png.aux.xml')


def test_category_names_with_palette_colours(mask_files, tmp_path):
    path = mask_files.palette_png(tmp_path / 'm.png', np.array([[0, 1], [2, 3]]))
    mask_files.aux_xml_categories(path, ['', 'urban', 'crops'])
    found = mask_classes(str(path))
    assert found.names == {1: 'urban', 2: 'crops'}
    assert found.colours[1] == mask_files.PALETTE[1]


@pytest.mark.parametrize('paletted', [True, False])
def test_qml_beside_the_mask(mask_files, tmp_path, paletted):
    path = int_tif(tmp_path / 'm.tif', np.array([[1, 2], [2, 5]]))
    mask_files.qml(
        path,
        [(1, 'road', '#ff0000'), (2, 'roof', '#00ff00'), (5, 'tree', '#0000ff')],
        paletted,
    )
    found = mask_classes(str(path))
    assert found.names == {1: 'road', 2: 'roof', 5: 'tree'}
    assert found.colours == {1: (255, 0, 0), 2: (0, 255, 0), 5: (0, 0, 255)}


def test_mask_table_adds_named_classes_absent_from_the_masks(mask_files, tmp_path):
    path = int_tif(tmp_path / 'm.tif', np.array([[1, 1], [2, 2]]))
    mask_files.aux_xml_categories(path, ['', 'grass', 'sand', 'snow'])
    table = mask_table([1, 2], str(path), 255)
    assert table.names == ('grass', 'sand', 'snow')
    assert table.values == (1, 2, 3)


def test_a_sidecar_naming_two_values_alike_is_refused(mask_files, tmp_path):
    path = int_tif(tmp_path / 'm.tif', np.array([[1, 2]]))
    mask_files.aux_xml_categories(path, ['', 'x', 'x'])
    with pytest.raises(LabelError, match='--class-table'):
        mask_table([1, 2], str(path), 255)


def test_broken_sidecar_is_named(tmp_path):
    path = int_tif(tmp_path / 'm.tif', np.array([[1, 2]]))
    path.with_suffix('.qml').write_text('<qgis><pipe>')
    with pytest.raises(LabelError, match=r'm\.qml is not readable XML'):
        mask_classes(str(path))


def _georeferenced_pair(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    """A 3-band image and an integer label raster over it (values 1, 2)."""
    image = tmp_path / 'images' / 'a.tif'
    image.parent.mkdir(parents=True)
    with rasterio.open(
        image,
        'w',
        driver='GTiff',
        width=64,
        height=64,
        count=3,
        dtype='uint8',
        crs='EPSG:32633',
        transform=rasterio.transform.from_origin(500_000, 5_000_000, 10, 10),
    ) as dst:
        dst.write(rng.integers(0, 255, (3, 64, 64), dtype=np.uint8))
    label = int_tif(tmp_path / 'labels' / 'a.tif', rng.integers(1, 3, (64, 64)))
    return image, label


def test_label_rasters_take_names_from_the_aux_xml(mask_files, tmp_path, rng):
    image, label = _georeferenced_pair(tmp_path, rng)
    mask_files.aux_xml_rat(
        label, [(1, 'field', (200, 200, 0)), (2, 'wood', (0, 90, 0))]
    )
    data = open_labelled('segment', image.parent, label.parent, split=None, size=32)
    assert data.class_table.names == ('field', 'wood')
    assert data.class_table.colours == ((200, 200, 0), (0, 90, 0))
    assert data.class_table.values == (1, 2)


def test_label_rasters_take_colours_from_their_colour_map(tmp_path, rng):
    image, label = _georeferenced_pair(tmp_path, rng)
    label.unlink()
    int_tif(
        label, rng.integers(1, 3, (64, 64)), {1: (9, 9, 9, 255), 2: (99, 0, 0, 255)}
    )
    data = open_labelled('segment', image.parent, label.parent, split=None, size=32)
    assert data.class_table.names == ('1', '2')
    assert data.class_table.colours == ((9, 9, 9), (99, 0, 0))
