"""Every command checks its output path before any work, the same way (issue #9).

An output below a file cannot be created (whoever runs the tests, root included):
one message naming the option, exit 1, nothing written. A missing folder that can
be created is created.
"""

from pathlib import Path

import pytest
import rasterio

from dspt_geo.data.synthetic import write_sample_rasters


def _files(root: Path) -> set[Path]:
    return set(root.rglob('*'))


def _args(command, blocked, labelled, trained, tiny, tmp_path):
    """The command's arguments with its output at *blocked*, and the option named."""
    segment = trained('segment') / 'model.safetensors'
    scene = next((labelled.shapes_test / 'images').glob('*.tif'))
    match command:
        case 'pretrain':
            sample = tmp_path / 'sample'
            write_sample_rasters(sample, size=64)
            return ['pretrain', sample / 'optical', '--out', blocked], '--out'
        case 'finetune':
            return [
                'finetune', 'segment', *tiny.data(labelled, 'segment'), '--out',
                blocked, *tiny.vit, '--steps', 1,
            ], '--out'  # fmt: skip
        case 'evaluate':
            return [
                'evaluate', segment, *tiny.data(labelled, 'segment', test=True),
                '--json', blocked / 'report.json',
            ], '--json'  # fmt: skip
        case 'predict':
            return ['predict', scene, '--model', segment, '--out', blocked / 'm.tif'], (
                '--out'
            )
        case 'qgis-project':
            return [
                'predict', scene, '--model', segment, '--out', tmp_path / 'm.tif',
                '--qgis-project', blocked / 'map.qgz', '--no-progress',
            ], '--qgis-project'  # fmt: skip
        case _:
            return ['demo', blocked, '--quick'], 'OUT_DIR'


COMMANDS = ('pretrain', 'finetune', 'evaluate', 'predict', 'qgis-project', 'demo')


@pytest.mark.parametrize('command', COMMANDS)
def test_an_output_below_a_file_is_one_message_and_writes_nothing(
    command, labelled, trained, tiny, cli_run, user_error, tmp_path
):
    blocker = tmp_path / 'file'
    blocker.write_text('in the way')
    args, option = _args(command, blocker / 'sub', labelled, trained, tiny, tmp_path)
    before = _files(tmp_path)

    result = cli_run(*args)

    user_error(result, option, 'cannot be created', f'{blocker} is a file')
    assert _files(tmp_path) == before


@pytest.mark.parametrize('command', ('pretrain', 'finetune', 'demo'))
def test_a_run_folder_that_is_a_file(
    command, labelled, trained, tiny, cli_run, user_error, tmp_path
):
    blocker = tmp_path / 'file'
    blocker.write_text('in the way')
    args, option = _args(command, blocker, labelled, trained, tiny, tmp_path)

    result = cli_run(*args)

    user_error(result, f'{option} {blocker} is a file; give a folder')
    assert blocker.read_text() == 'in the way'


@pytest.mark.parametrize('command', ('evaluate', 'predict'))
def test_a_file_output_that_is_a_folder(
    command, labelled, trained, tiny, cli_run, user_error, tmp_path
):
    args, option = _args(command, tmp_path, labelled, trained, tiny, tmp_path)
    folder = tmp_path / ('report.json' if command == 'evaluate' else 'm.tif')
    folder.mkdir()

    result = cli_run(*args)

    user_error(result, f'{option} {folder} is a folder; give a file name')


def test_predict_creates_a_missing_output_folder(labelled, trained, cli_run, tmp_path):
    scene = next((labelled.shapes_test / 'images').glob('*.tif'))
    out = tmp_path / 'new' / 'deeper' / 'mask.tif'

    result = cli_run(
        'predict', scene, '--model', trained('segment') / 'model.safetensors',
        '--out', out, '--qgis-project', tmp_path / 'other' / 'map.qgz', '--no-progress',
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    with rasterio.open(out) as mask:
        assert mask.count == 1
    assert (tmp_path / 'other' / 'map.qgz').is_file()
