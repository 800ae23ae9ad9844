import json

import numpy as np
import pytest
from click.testing import CliRunner
from dspt_geo_cli.main import cli


@pytest.fixture
def folder(raster_writer, rng):
    raster_writer(
        'd/s2.tif', rng.integers(1, 999, (4, 64, 64), dtype=np.uint16), nodata=0
    )
    raster_writer(
        'd/sub/vv_VV.tif', rng.normal(size=(1, 32, 32)).astype(np.float32), res=20
    )
    raster_writer(
        'd/sub/vv_VH.tif', rng.normal(size=(1, 32, 32)).astype(np.float32), res=20
    )
    return raster_writer(
        'd/s2b.tif',
        rng.integers(1, 999, (4, 64, 64), dtype=np.uint16),
        crs='EPSG:32634',
        nodata=0,
    ).parent


def test_text_output_names_groups_files_and_crs(folder):
    result = CliRunner().invoke(cli, ['info', str(folder)])

    assert result.exit_code == 0, result.output
    assert '2 sensor group(s), 3 raster(s)' in result.output
    assert '4band-uint16' in result.output and '2band-float32-VV-VH' in result.output
    assert 'EPSG:32634' in result.output


def test_json_output_with_statistics(folder):
    result = CliRunner().invoke(cli, ['info', str(folder), '--json', '--stats'])

    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    groups = {g['name']: g for g in doc['groups']}
    assert groups['4band-uint16']['crs'] == 'EPSG:32633'
    assert len(groups['4band-uint16']['files']) == 2
    stats = groups['2band-float32-VV-VH']['statistics']
    assert stats['bands'] == ['VV', 'VH'] and abs(stats['mean'][0]) < 0.5


def test_without_paths_describes_the_builtin_sample():
    result = CliRunner().invoke(cli, ['info', '--json'])

    assert result.exit_code == 0, result.output
    groups = {g['name']: g for g in json.loads(result.stdout)['groups']}
    assert set(groups) == {'4band-uint16-blue-green-red-nir', '2band-float32-VV-VH'}
    # The sample's SAR is stored in dB: recognised, and kept as it is.
    assert groups['2band-float32-VV-VH']['sar']['conversion'] == 'dB -> dB (as stored)'
    assert groups['4band-uint16-blue-green-red-nir']['sar'] is None


def test_folder_without_rasters_is_one_clear_error(tmp_path):
    (tmp_path / 'empty').mkdir()

    result = CliRunner().invoke(cli, ['info', str(tmp_path / 'empty')])

    assert result.exit_code == 1
    assert 'Error: no usable georeferenced raster or image chip found' in result.output
    assert 'Traceback' not in result.output


def test_corrupt_file_is_named_and_the_rest_described(folder):
    (folder / 'broken.tif').write_bytes(b'not a tiff at all')

    result = CliRunner().invoke(cli, ['info', str(folder)])

    assert result.exit_code == 0
    assert 'broken.tif: GDAL cannot open it' in result.output


def test_missing_path_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ['info', str(tmp_path / 'nope')])
    assert result.exit_code == 2
    assert 'does not exist' in result.output


@pytest.mark.parametrize('command', [[], ['info']])
def test_help(command):
    result = CliRunner().invoke(cli, [*command, '--help'])
    assert result.exit_code == 0
    assert 'Usage:' in result.output


def test_chip_groups_are_shown_with_count_size_range_and_bands(tmp_path, rng):
    from PIL import Image

    for i, (rows, cols) in enumerate([(30, 30), (40, 36), (40, 36)]):
        folder = tmp_path / 'chips' / ('a' if i else 'b')
        folder.mkdir(parents=True, exist_ok=True)
        data = rng.integers(0, 255, (rows, cols, 3), dtype=np.uint8)
        Image.fromarray(data).save(folder / f'{i}.jpg')

    result = CliRunner().invoke(cli, ['info', str(tmp_path / 'chips')])

    assert result.exit_code == 0, result.output
    assert '1 chip group(s), 3 image chip(s)' in result.output
    assert '3band-uint8: image chips' in result.output
    assert 'size       30 x 30 to 36 x 40 px' in result.output
    assert 'chips      3 (JPEG)' in result.output
    assert 'WARNING' not in result.output
