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
    assert (
        'GDAL cannot open it; the file may be corrupt or cut off (1):' in result.output
    )
    assert str(folder / 'broken.tif') in result.stdout


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


def test_skipped_files_are_summarised_per_reason(tmp_path, raster_writer, rng):
    raster_writer('d/good.tif', rng.integers(1, 255, (1, 16, 16), dtype=np.uint8))
    raster_writer('d/empty.tif', np.zeros((1, 16, 16), np.uint8), nodata=0)
    for i in range(5):
        (tmp_path / 'd' / f'broken{i}.tif').write_bytes(b'II*\x00' + bytes(range(64)))

    quiet = CliRunner().invoke(cli, ['info', str(tmp_path / 'd')])
    verbose = CliRunner().invoke(cli, ['-v', 'info', str(tmp_path / 'd')])

    assert quiet.exit_code == 0, quiet.output
    warnings = [line for line in quiet.stderr.splitlines() if 'WARNING' in line]
    assert len(warnings) == 2, quiet.stderr
    (broken,) = [line for line in warnings if 'GDAL cannot open' in line]
    assert 'skipping 5 files' in broken and 'and 2 more (-v lists all)' in broken
    assert 'no valid pixel' in ''.join(warnings)
    # stdout: one line per reason, then the files.
    assert '6 file(s) skipped:' in quiet.stdout
    assert (
        'GDAL cannot open it; the file may be corrupt or cut off (5):' in quiet.stdout
    )
    # -v names every file, with GDAL's own message.
    listed = [line for line in verbose.stderr.splitlines() if 'skipped ' in line]
    assert len(listed) == 6
    assert all(f'broken{i}.tif' in verbose.stderr for i in range(5))
