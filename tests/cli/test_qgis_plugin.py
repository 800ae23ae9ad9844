"""dspt-geo's QGIS Processing provider, run in real QGIS (Debian's python3-qgis)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from dspt_geo.qgis import PLUGIN_NAME, PLUGIN_SOURCE

from .conftest import write_tif

DEBIAN_PYTHON = Path('/usr/bin/python3')
QGIS_PACKAGE = Path('/usr/lib/python3/dist-packages/qgis')
DRIVER = Path(__file__).with_name('qgis_processing.py')
EXECUTABLE = Path(sys.executable).with_name('dspt-geo')


def _env(home: Path) -> dict[str, str]:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return {
        'PATH': '/usr/bin:/bin',
        'HOME': str(home),
        'QT_QPA_PLATFORM': 'offscreen',
        'XDG_RUNTIME_DIR': str(home),
        'LANG': 'C.UTF-8',
        'DSPT_GEO_EXECUTABLE': str(EXECUTABLE),
        'OMP_NUM_THREADS': '1',
        'HF_HUB_OFFLINE': '1',
    }


@pytest.fixture
def qgis_run(tmp_path):
    """Run one algorithm of the provider in real QGIS; return its JSON report."""
    if not (DEBIAN_PYTHON.is_file() and QGIS_PACKAGE.is_dir()):
        pytest.skip('QGIS (Debian python3-qgis) is not installed')

    def run(algorithm, parameters, outputs=None, cancel=False):
        args = {
            'plugins': str(PLUGIN_SOURCE.parent),
            'algorithm': algorithm,
            'parameters': {k: str(v) for k, v in parameters.items()},
            'outputs': {k: str(v) for k, v in (outputs or {}).items()},
            'cancel': cancel,
        }
        done = subprocess.run(
            [str(DEBIAN_PYTHON), str(DRIVER), json.dumps(args)],
            capture_output=True, text=True, env=_env(tmp_path / 'qgis-home'),
            timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run


def _scene(labelled) -> Path:
    return next((labelled.shapes_test / 'images').glob('*.tif'))


def test_predict_scene_writes_a_styled_mask_layer(
    labelled, trained, qgis_run, tmp_path
):
    out = tmp_path / 'mask.tif'
    found = qgis_run(
        'dspt_geo:predict',
        {'INPUT': _scene(labelled), 'MODEL': trained('segment') / 'model.safetensors'},
        outputs={'OUTPUT': out},
    )
    assert found['algorithms'] == [
        'dspt_geo:evaluate',
        'dspt_geo:info',
        'dspt_geo:predict',
    ]
    assert found['ok'], found
    assert found['results']['OUTPUT'] == str(out)
    assert found['progress'] and found['progress'][-1] == 100, (
        found['log'],
        found['loaded'],
    )
    with rasterio.open(out) as mask, rasterio.open(_scene(labelled)) as scene:
        assert (mask.crs, mask.transform) == (scene.crs, scene.transform)
        assert len(np.unique(mask.read(1))) > 1
    (layer,) = found['loaded']
    assert layer['valid'] and layer['renderer'] == 'paletted'
    assert len(layer['classes']) == 3


def test_detections_load_as_categorised_boxes(labelled, trained, qgis_run, tmp_path):
    scene = next((labelled.squares_test / 'images').glob('*.tif'))
    out = tmp_path / 'boxes.gpkg'
    found = qgis_run(
        'dspt_geo:predict',
        {'INPUT': scene, 'MODEL': trained('detect') / 'model.safetensors'},
        outputs={'OUTPUT_DETECTIONS': out},
    )
    assert found['ok'], found
    assert out.is_file()
    (layer,) = found['loaded']
    assert layer['valid'] and layer['renderer'] == 'categorizedSymbol'


def test_cancel_stops_the_run_and_leaves_nothing(trained, qgis_run, tmp_path):
    scene = tmp_path / 'scenes' / 'big.tif'
    scene.parent.mkdir()
    rng = np.random.default_rng(0)
    write_tif(scene, rng.integers(0, 255, (3, 1024, 1024), dtype=np.uint8))
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    found = qgis_run(
        'dspt_geo:predict',
        {'INPUT': scene, 'MODEL': trained('segment') / 'model.safetensors'},
        outputs={'OUTPUT': out_dir / 'mask.tif'},
        cancel=True,
    )
    assert not found['ok']
    assert any('cancelled' in e for e in found['errors']), found
    assert list(out_dir.iterdir()) == []


def test_a_bad_model_file_surfaces_the_cli_message(labelled, qgis_run, tmp_path):
    bad = tmp_path / 'model.safetensors'
    bad.write_bytes(b'not a model')
    found = qgis_run(
        'dspt_geo:predict',
        {'INPUT': _scene(labelled), 'MODEL': bad},
        outputs={'OUTPUT': tmp_path / 'mask.tif'},
    )
    assert not found['ok']
    message = '\n'.join(found['errors'])
    assert message.startswith('Error: ') and str(bad) in message, message
    assert 'Traceback' not in message
    assert not (tmp_path / 'mask.tif').exists()


def test_inspect_and_evaluate(labelled, trained, qgis_run, tmp_path):
    found = qgis_run(
        'dspt_geo:info', {'INPUT': _scene(labelled), 'OUTPUT': tmp_path / 'info.json'}
    )
    assert found['ok'], found
    description = json.loads((tmp_path / 'info.json').read_text())
    assert len(description['groups'][0]['files']) == 1
    root = labelled.shapes_test
    found = qgis_run(
        'dspt_geo:evaluate',
        {
            'INPUT': root / 'images', 'LABELS': root / 'labels',
            'MODEL': trained('segment') / 'model.safetensors',
            'OUTPUT': tmp_path / 'report.json',
        },
    )  # fmt: skip
    assert found['ok'], found
    report = json.loads((tmp_path / 'report.json').read_text())
    assert 0 <= report['miou'] <= 1


def test_install_into_a_profile_and_qgis_process_lists_it(cli_run, tmp_path):
    qgis_process = shutil.which('qgis_process.bin', path='/usr/bin') or shutil.which(
        'qgis_process', path='/usr/bin'
    )
    profiles = tmp_path / 'config'
    result = cli_run(
        'qgis-plugin', 'install', '--profile', profiles / 'profiles' / 'default'
    )
    assert result.exit_code == 0, result.output
    target = profiles / 'profiles' / 'default' / 'python' / 'plugins' / PLUGIN_NAME
    assert (target / 'metadata.txt').is_file()
    environment = json.loads((target / 'environment.json').read_text())
    assert Path(environment['executable']) == EXECUTABLE
    assert not list(target.parent.glob('.*')), 'no staging folder is left behind'
    # A second install replaces the first.
    assert (
        cli_run(
            'qgis-plugin', 'install', '--profile', profiles / 'profiles' / 'default'
        ).exit_code
        == 0
    )
    if qgis_process is None:
        pytest.skip("qgis_process (Debian package 'qgis') is not installed")
    env = {**_env(tmp_path / 'home'), 'QGIS_CUSTOM_CONFIG_PATH': str(profiles)}
    enable = subprocess.run(
        [qgis_process, 'plugins', 'enable', PLUGIN_NAME],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert enable.returncode == 0, enable.stdout + enable.stderr
    listed = subprocess.run(
        [qgis_process, 'list'], capture_output=True, text=True, env=env, timeout=120,
        check=False,
    )  # fmt: skip
    assert 'dspt_geo:predict' in listed.stdout, (
        listed.stdout[-2000:] + listed.stderr[-2000:]
    )
    assert 'dspt_geo:evaluate' in listed.stdout and 'dspt_geo:info' in listed.stdout
