"""``dspt-geo predict`` through the CLI, on models that ``dspt-geo finetune`` trained."""

import math
import zipfile

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from dspt_geo.models.model_file import read_metadata

from .conftest import assert_user_error, dspt_geo


def _scene(labelled, task):
    root = labelled.shapes_test if task == 'segment' else labelled.squares_test
    return next((root / 'images').glob('*.tif'))


def test_segmentation_writes_a_styled_mask_beside_the_scene(
    labelled, trained, tmp_path
):
    scene = tmp_path / 'scene.tif'
    scene.write_bytes(_scene(labelled, 'segment').read_bytes())

    result = dspt_geo(
        'predict',
        scene,
        '--model',
        trained('segment') / 'model.safetensors',
        '--no-progress',
    )

    assert result.exit_code == 0, result.output
    mask = tmp_path / 'scene_mask.tif'
    assert str(mask) in result.output
    with rasterio.open(scene) as src, rasterio.open(mask) as out:
        assert (out.crs, out.transform, out.shape) == (
            src.crs,
            src.transform,
            src.shape,
        )
        classes = out.read(1)
        assert out.nodata == 255 and out.compression is not None
        assert out.colormap(1)[1][:3] != out.colormap(1)[0][:3]
    assert set(np.unique(classes)) <= {0, 1, 2}
    assert len(np.unique(classes)) > 1, 'the squares and discs are found'
    assert (tmp_path / 'scene_mask.qml').exists()


def test_detection_of_a_folder_goes_to_an_output_folder(labelled, trained, tmp_path):
    folder = _scene(labelled, 'detect').parent

    result = dspt_geo(
        'predict', folder, '--model', trained('detect') / 'model.safetensors',
        '--out', tmp_path / 'out', '--no-progress',
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    outputs = sorted((tmp_path / 'out').glob('*_detections.gpkg'))
    assert len(outputs) == len(list(folder.glob('*.tif')))
    boxes = gpd.read_file(outputs[0], layer='detections')
    with rasterio.open(_scene(labelled, 'detect')) as src:
        assert boxes.crs == src.crs
    assert {'class_id', 'class_name', 'score', 'scene'} <= set(boxes.columns)
    assert len(boxes) > 0


def test_qgis_project_holds_the_scene_and_the_output(labelled, trained, tmp_path):
    project = tmp_path / 'map.qgz'

    result = dspt_geo(
        'predict', _scene(labelled, 'segment'), '--model',
        trained('segment') / 'model.safetensors', '--out', tmp_path / 'mask.tif',
        '--qgis-project', project, '--no-progress',
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(project) as archive:
        (qgs,) = [n for n in archive.namelist() if n.endswith('.qgs')]
        text = archive.read(qgs).decode()
    assert 'mask.tif' in text and _scene(labelled, 'segment').name in text


@pytest.mark.parametrize(
    ('case', 'fragment'),
    [
        ('file-for-many', 'several scenes'),
        ('pretrained', 'not a fine-tuned model'),
        ('exists', 'exists'),
    ],
)
def test_bad_requests_are_one_clear_error(labelled, trained, tmp_path, case, fragment):
    model = trained('segment') / 'model.safetensors'
    scene = _scene(labelled, 'segment')
    match case:
        case 'file-for-many':
            args = [scene.parent, '--model', model, '--out', tmp_path / 'one.tif']
            if len(list(scene.parent.glob('*.tif'))) < 2:
                args = [scene, scene, '--model', model, '--out', tmp_path / 'one.tif']
        case 'pretrained':
            fake = tmp_path / 'pretrained.safetensors'
            import torch

            from dspt_geo.models import save_model_file

            save_model_file(fake, {'w': torch.zeros(1)}, {'kind': 'mae-pretrained'})
            args = [scene, '--model', fake, '--out', tmp_path / 'x.tif']
        case 'exists':
            (tmp_path / 'x.tif').write_bytes(b'previous')
            args = [scene, '--model', model, '--out', tmp_path / 'x.tif']

    result = dspt_geo('predict', *args, '--no-progress')

    assert_user_error(result, fragment)
    if case == 'exists':
        assert (tmp_path / 'x.tif').read_bytes() == b'previous'


def _boxes(path):
    frame = gpd.read_file(path, layer='detections')
    return frame.geometry.values


def _matched(found, reference, iou=0.7):
    """Share of *reference* boxes that a box of *found* overlaps by *iou*."""
    if len(reference) == 0:
        return 1.0
    hits = 0
    for box in reference:
        overlaps = [box.intersection(f).area / box.union(f).area for f in found]
        hits += max(overlaps, default=0.0) >= iou
    return hits / len(reference)


def test_detection_work_follows_the_training_labels_and_tile_auto(
    labelled, trained, tmp_path
):
    model = trained('detect') / 'model.safetensors'
    scene = _scene(labelled, 'detect')
    metadata = read_metadata(model)
    # Squares of 12 px or more, 3 px apart: one per 15 x 15 px at most.
    assert 1 <= metadata['max_objects'] <= math.ceil(64 / 15) ** 2

    outputs = {}
    for name, options in {
        'sized': [],
        'model limits': ['--max-objects', '100000'],
        'auto': ['--tile', 'auto'],
    }.items():
        outputs[name] = tmp_path / f'{name}.gpkg'
        result = dspt_geo(
            'predict', scene, '--model', model, '--out', outputs[name],
            '--no-progress', *options,
        )  # fmt: skip
        assert result.exit_code == 0, result.output

    sized, full, auto = (_boxes(outputs[n]) for n in ('sized', 'model limits', 'auto'))
    assert len(full) > 0
    assert _matched(sized, full) >= 0.9, 'fewer proposals find the same objects'
    assert _matched(auto, full) >= 0.8, 'larger windows find the same objects'


def test_tile_must_be_a_size_or_auto(labelled, trained):
    result = dspt_geo(
        'predict', _scene(labelled, 'detect'), '--model',
        trained('detect') / 'model.safetensors', '--tile', 'big',
    )  # fmt: skip
    assert result.exit_code == 2
    assert '--tile' in result.output and 'auto' in result.output
