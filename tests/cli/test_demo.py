import json
import sqlite3
import time
import zipfile

import numpy as np
import pyogrio
import pytest
import rasterio
from PIL import Image

from dspt_geo.data.synthetic import LANDSCAPE_CLASSES

from .conftest import dspt_geo, one_thread


@pytest.fixture(scope='module')
def quick_demo(tmp_path_factory):
    """One quick demo through the CLI, and how long it took."""
    out = tmp_path_factory.mktemp('demo') / 'dspt-geo-demo'
    started = time.perf_counter()
    with one_thread():
        result = dspt_geo('demo', out, '--quick')
    return out, result, time.perf_counter() - started


def test_quick_demo_runs_through_the_cli(quick_demo):
    out, result, seconds = quick_demo

    assert result.exit_code == 0, result.output
    assert seconds < 60
    assert f'qgis {out / "demo.qgz"}' in result.output
    assert 'not the accuracy of a real run' in result.output


def test_the_demo_probes_against_random_init(quick_demo):
    out, result, _ = quick_demo

    report = json.loads((out / 'runs' / 'probe' / 'probe.json').read_text())
    assert [e['name'] for e in report['encoders']][1] == 'random'
    assert report['encoders'][0]['name'].endswith('pretrained.safetensors')
    assert (out / 'runs' / 'probe' / 'probe.png').stat().st_size > 0
    table = result.output[result.output.index('test accuracy') :]
    assert 'random' in table and 'knn' in table and 'logistic' in table


def test_the_mask_is_a_cog_on_the_scene_grid(quick_demo):
    out = quick_demo[0]

    with rasterio.open(out / 'data' / 'scene' / 'scene.tif') as scene:
        grid = scene.crs, scene.transform, scene.shape
    with rasterio.open(out / 'scene_mask.tif') as mask:
        assert (mask.crs, mask.transform, mask.shape) == grid
        assert mask.tags(ns='IMAGE_STRUCTURE').get('LAYOUT') == 'COG'
        values = np.unique(mask.read(1))
    assert set(values.tolist()) <= {*range(len(LANDSCAPE_CLASSES)), 255}
    assert (out / 'scene_mask.qml').is_file()


def test_the_detections_are_a_geopackage_layer(quick_demo):
    out = quick_demo[0]
    path = out / 'scene_detections.gpkg'

    assert 'detections' in [name for name, _ in pyogrio.list_layers(path)]
    info = pyogrio.read_info(path, layer='detections')
    assert info['crs'] == 'EPSG:32633'
    assert {'class_id', 'class_name', 'score', 'scene'} <= set(info['fields'])
    with sqlite3.connect(path) as db:
        assert db.execute('select count(*) from gpkg_contents').fetchone()[0] >= 1
    assert (out / 'scene_detections.qml').is_file()


def test_the_project_names_both_outputs(quick_demo):
    out = quick_demo[0]

    with zipfile.ZipFile(out / 'demo.qgz') as project:
        (name,) = [n for n in project.namelist() if n.endswith('.qgs')]
        text = project.read(name).decode()
    assert 'scene_mask.tif' in text
    assert 'scene_detections.gpkg' in text


def test_the_quicklook_is_not_blank(quick_demo):
    image = np.asarray(Image.open(quick_demo[0] / 'demo.png').convert('RGB'))

    assert image.shape[0] > 32 and image.shape[1] > 64
    assert image.std() > 10
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 5


def test_a_second_run_needs_overwrite(quick_demo, user_error, cli_run):
    out = quick_demo[0]

    result = cli_run('demo', out, '--quick')

    user_error(result, str(out), '--overwrite')
    assert (out / 'demo.qgz').is_file()


def test_overwrite_refuses_a_folder_that_is_no_demo(tmp_path, user_error, cli_run):
    (tmp_path / 'notes.txt').write_text('mine')

    result = cli_run('demo', tmp_path, '--quick', '--overwrite')

    user_error(result, 'not a dspt-geo demo folder')
    assert (tmp_path / 'notes.txt').read_text() == 'mine'


@pytest.mark.parametrize('args', [['demo', '--help'], ['--help']])
def test_help_names_the_demo(cli_run, args):
    result = cli_run(*args)

    assert result.exit_code == 0, result.output
    assert 'demo' in result.output


def test_the_outputs_open_styled_in_real_qgis(quick_demo, qgis_check):
    out, _, _ = quick_demo

    found = qgis_check(
        out / 'scene_mask.tif', out / 'scene_detections.gpkg', out / 'demo.qgz'
    )

    with rasterio.open(out / 'scene_mask.tif') as src:
        crs = src.crs.to_string()
        classes = src.read(1, masked=True).compressed()
    # The classes a 3-step model happens to predict, each on at least 1 % of the scene.
    counts = np.bincount(classes, minlength=len(LANDSCAPE_CLASSES))
    present = int((counts >= 0.01 * classes.size).sum())
    assert found['mask']['valid'] and found['mask']['crs'] == crs
    assert found['mask']['renderer'] == 'paletted'
    assert found['mask']['labels'] == list(LANDSCAPE_CLASSES)
    assert found['mask']['gdal_layout'] == 'COG'
    assert found['detections']['valid'] and found['detections']['crs'] == crs
    assert found['detections']['renderer'] == 'categorizedSymbol'
    assert found['project']['read'] and all(
        layer[1] for layer in found['project']['layers']
    )
    # Every present class gets its colour in the render, besides the background.
    assert found['render']['errors'] == [] and present >= 2
    assert found['render']['colours'] >= present + 1
