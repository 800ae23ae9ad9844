import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dspt_geo.predict import (
    PredictionSpec,
    categorized_qml,
    palette_qml,
    predict_scene,
    write_qgis_project,
)

from .conftest import BlobDetector, ConvNet


def test_palette_style_lists_classes() -> None:
    root = ET.fromstring(palette_qml(['water', 'forest'], [(0, 0, 255), (0, 128, 0)]))
    renderer = root.find('pipe/rasterrenderer')
    assert renderer.get('type') == 'paletted' and renderer.get('band') == '1'
    entries = renderer.findall('colorPalette/paletteEntry')
    assert [(e.get('value'), e.get('color'), e.get('label')) for e in entries] == [
        ('0', '#0000ff', 'water'),
        ('1', '#008000', 'forest'),
    ]


def test_categorized_style_has_one_symbol_per_class() -> None:
    root = ET.fromstring(categorized_qml(['boat', 'ship'], [(255, 0, 0), (0, 0, 255)]))
    renderer = root.find('renderer-v2')
    assert (
        renderer.get('type') == 'categorizedSymbol'
        and renderer.get('attr') == 'class_id'
    )
    categories = renderer.findall('categories/category')
    assert [(c.get('value'), c.get('label')) for c in categories] == [
        ('0', 'boat'),
        ('1', 'ship'),
    ]
    assert len(renderer.findall('symbols/symbol')) == 2


@pytest.fixture
def outputs(
    raster_writer: Callable[..., Path], metadata: dict[str, Any], tmp_path: Path
) -> dict[str, Path]:
    """A scene with blobs, its class raster, detections and a project."""
    rows, cols = np.mgrid[0:300, 0:400]
    data = np.stack(
        [
            (50 + 100 * ((rows // 60 + cols // 80) % 2)).astype(np.uint8),
            np.full((300, 400), 60, np.uint8),
            (40 + cols // 4).astype(np.uint8),
        ]
    )
    # Objects no larger than the overlap, so one window holds each whole.
    data[:, 100:125, 100:130] = 240
    data[:, 200:220, 250:280] = 200
    scene = raster_writer(
        'scene/scene.tif',
        data,
        nodata=0,
        descriptions=['red', 'green', 'blue'],
        crs='EPSG:32632',
    )
    out = tmp_path / 'out'
    spec = PredictionSpec.from_metadata(metadata)
    mask = predict_scene(scene, ConvNet(), spec, out / 'mask.tif', progress=False)
    metadata.update(
        task='detect',
        classes=[
            {'name': 'boat', 'colour': [255, 0, 0]},
            {'name': 'ship', 'colour': [0, 0, 255]},
        ],
    )
    found = predict_scene(
        scene, BlobDetector(), PredictionSpec.from_metadata(metadata), out / 'found.gpkg',
        overlap=32, progress=False,
    )  # fmt: skip
    project = write_qgis_project(
        out / 'prediction.qgz', scene, [found.output, mask.output]
    )
    return {
        'scene': scene,
        'mask': mask.output,
        'detections': found.output,
        'project': project,
    }


def test_project_is_a_zip_with_relative_styled_layers(outputs: dict[str, Path]) -> None:
    with zipfile.ZipFile(outputs['project']) as archive:
        assert archive.namelist() == ['prediction.qgs']
        root = ET.fromstring(archive.read('prediction.qgs'))
    layers = root.findall('projectlayers/maplayer')
    assert [layer.findtext('datasource') for layer in layers] == [
        './found.gpkg|layername=detections',
        './mask.tif',
        '../scene/scene.tif',
    ]
    assert layers[0].find('renderer-v2').get('type') == 'categorizedSymbol'
    assert layers[1].find('pipe/rasterrenderer').get('type') == 'paletted'
    assert root.findtext('properties/Paths/Absolute') == 'false'


def test_outputs_open_styled_in_real_qgis(
    outputs: dict[str, Path], qgis_check: Callable[..., dict[str, Any]]
) -> None:
    found = qgis_check(outputs['mask'], outputs['detections'], outputs['project'])

    mask = found['mask']
    assert mask['valid'] and mask['crs'] == 'EPSG:32632'
    assert mask['renderer'] == 'paletted', 'mask.qml was applied'
    assert mask['labels'] == ['water', 'forest', 'urban']
    assert mask['colours'] == ['#1f78b4', '#33a02c', '#e31a1c']
    assert mask['gdal_categories'] == ['water', 'forest', 'urban']
    assert mask['gdal_rat'] == ['water', 'forest', 'urban']
    assert mask['gdal_layout'] == 'COG'

    detections = found['detections']
    assert detections['valid'] and detections['crs'] == 'EPSG:32632'
    assert detections['features'] == 2
    assert (
        detections['renderer'] == 'categorizedSymbol'
        and detections['field'] == 'class_id'
    )
    assert detections['labels'] == ['boat', 'ship']
    assert {'class_id', 'class_name', 'score', 'scene'} <= set(detections['fields'])

    assert found['render']['errors'] == [] and found['render']['colours'] > 3

    project = found['project']
    assert project['read'] and project['crs'] == 'EPSG:32632'
    assert project['layers'] == [
        ['found', True, 'EPSG:32632', 'categorizedSymbol'],
        ['mask', True, 'EPSG:32632', 'paletted'],
        ['scene', True, 'EPSG:32632', 'multibandcolor'],
    ]
    assert project['render']['colours'] > 3
    assert found['messages'] == [], 'QGIS logged no warning'
