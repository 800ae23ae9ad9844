"""``dspt-geo pretrain``: run folders that are not overwritten by accident, bad input."""

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner, Result
from dspt_geo_cli.main import cli

from dspt_geo.data.synthetic import write_sample_rasters
from dspt_geo.models import load_model_file

#: A ViT and decoder small enough to train for dozens of steps in seconds on a CPU.
TINY_MODEL = [
    '--model', 'vit_tiny_patch16_224',
    '--model-arg', 'depth=2', '--model-arg', 'embed_dim=64', '--model-arg', 'num_heads=2',
    '--decoder-depth', '1', '--decoder-dim', '32', '--decoder-heads', '2',
    '--image-size', '32', '--patch-size', '8', '--batch-size', '8',
    '--samples-per-epoch', '1000', '--lr', '1e-3',
    '--num-workers', '0', '--accelerator', 'cpu', '--log-every', '1',
]  # fmt: skip


@pytest.fixture(scope='module')
def optical(tmp_path_factory) -> Path:
    """Folder of one 4-band optical raster, 128 px."""
    folder = tmp_path_factory.mktemp('sample')
    write_sample_rasters(folder, size=128)
    return folder / 'optical'


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch) -> Iterator[None]:
    """Tiny models gain nothing from threads; on a busy machine they lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pretrain(*args: object) -> Result:
    return CliRunner().invoke(cli, ['pretrain', *map(str, args)])


def steps(run: Path) -> list[int]:
    with (run / 'metrics.csv').open(newline='') as file:
        return [int(row['step']) for row in csv.DictReader(file)]


def lrs(run: Path) -> list[float]:
    with (run / 'metrics.csv').open(newline='') as file:
        return [float(row['lr']) for row in csv.DictReader(file)]


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit code 1, one message naming *fragments*, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert 'Traceback' not in result.output
    for fragment in fragments:
        assert fragment in result.output


# A finished run is not overwritten by accident.


@pytest.fixture
def finished(optical, tmp_path) -> Path:
    """A finished run of 10 steps."""
    run = tmp_path / 'run'
    result = pretrain(optical, '--out', run, *TINY_MODEL, '--steps', 10)
    assert result.exit_code == 0, result.output
    return run


def test_a_finished_run_is_not_overwritten(optical, finished):
    model = (finished / 'pretrained.safetensors').read_bytes()
    metrics = (finished / 'metrics.csv').read_bytes()

    result = pretrain(optical, '--out', finished, *TINY_MODEL, '--steps', 10)

    assert_user_error(result, 'holds a finished run', '--resume', '--overwrite')
    assert (finished / 'pretrained.safetensors').read_bytes() == model
    assert (finished / 'metrics.csv').read_bytes() == metrics


def test_resume_continues_a_finished_run_to_more_steps(optical, finished):
    model = (finished / 'pretrained.safetensors').read_bytes()

    result = pretrain(
        optical, '--out', finished, *TINY_MODEL, '--steps', 16, '--resume'
    )

    assert result.exit_code == 0, result.output
    _, metadata = load_model_file(finished / 'pretrained.safetensors')
    assert metadata['training']['steps'] == 16
    assert (finished / 'pretrained.safetensors').read_bytes() != model
    assert steps(finished) == list(range(1, 17))
    # The schedule is stretched to the new length: the 10-step run ended at lr 0,
    # the 6 more steps run on the cosine of 16 steps, not at 0.
    assert lrs(finished)[9] == 0
    assert all(lr > 0 for lr in lrs(finished)[10:15])
    assert lrs(finished)[10] > lrs(finished)[11] > lrs(finished)[14]


def test_the_last_checkpoint_is_at_the_final_step(optical, tmp_path):
    """Not at the last periodic checkpoint: --resume continues from the end."""
    run = tmp_path / 'run'
    result = pretrain(
        optical, '--out', run, *TINY_MODEL, '--steps', 5, '--checkpoint-every', 2
    )

    assert result.exit_code == 0, result.output
    last = torch.load(run / 'checkpoints' / 'last.ckpt', weights_only=True)
    assert last['global_step'] == 5


def test_overwrite_starts_over(optical, finished):
    result = pretrain(
        optical, '--out', finished, *TINY_MODEL, '--steps', 4, '--overwrite'
    )

    assert result.exit_code == 0, result.output
    _, metadata = load_model_file(finished / 'pretrained.safetensors')
    assert metadata['training']['steps'] == 4
    assert steps(finished) == [1, 2, 3, 4]
    last = torch.load(finished / 'checkpoints' / 'last.ckpt', weights_only=True)
    assert last['global_step'] == 4
    assert yaml.safe_load((finished / 'config.yaml').read_text())['steps'] == 4


def test_overwrite_with_bad_input_keeps_the_previous_run(optical, finished, tmp_path):
    """The inputs are checked before --overwrite deletes anything."""
    before = {p: p.read_bytes() for p in finished.rglob('*') if p.is_file()}
    (tmp_path / 'typo').mkdir()

    result = pretrain(tmp_path / 'typo', '--out', finished, *TINY_MODEL, '--overwrite')

    assert_user_error(result, 'no usable georeferenced raster')
    assert {p: p.read_bytes() for p in finished.rglob('*') if p.is_file()} == before


def test_a_run_of_another_model_shape_is_not_resumed(optical, tmp_path):
    run = tmp_path / 'run'
    assert pretrain(optical, '--out', run, *TINY_MODEL, '--steps', 2).exit_code == 0
    (run / 'pretrained.safetensors').unlink()  # as if killed after its checkpoints

    result = pretrain(
        optical, '--out', run, *TINY_MODEL, '--steps', 4, '--decoder-dim', '16'
    )

    assert_user_error(result, 'another model shape', 'decoder_embed_dim: 32 -> 16')


# Unsafe and unreadable starting weights.


class Payload:
    """Any class: unpickling it would import and call code."""

    def __init__(self) -> None:
        self.weights = torch.zeros(2)


def test_a_checkpoint_with_pickled_code_is_refused(optical, tmp_path):
    evil = tmp_path / 'evil.pth'
    torch.save({'model': Payload()}, evil)
    run = tmp_path / 'run'

    result = pretrain(optical, '--out', run, *TINY_MODEL, '--steps', 2, '--init', evil)

    assert_user_error(result, str(evil), 'pickled code', 'Payload')
    assert not run.exists()  # checked before the run folder is written


def test_a_file_that_is_no_checkpoint_is_refused(optical, tmp_path):
    notes = tmp_path / 'notes.txt'
    notes.write_text('weights are in the other folder\n')
    run = tmp_path / 'run'

    result = pretrain(optical, '--out', run, *TINY_MODEL, '--init', notes)

    assert_user_error(result, str(notes), 'not a weights file')
    assert not run.exists()


def test_missing_init_file_is_refused(optical, tmp_path):
    result = pretrain(
        optical, '--out', tmp_path / 'run', *TINY_MODEL, '--init', tmp_path / 'no.pth'
    )

    assert_user_error(result, 'no such weights file')


# Bad data and options.


def test_image_size_larger_than_every_raster(optical, tmp_path):
    run = tmp_path / 'run'

    result = pretrain(optical, '--out', run, *TINY_MODEL, '--image-size', 256)

    assert_user_error(result, 'larger than every raster', 'lower the patch/image size')
    assert not run.exists()


def test_folder_without_rasters(tmp_path):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'readme.txt').write_text('no rasters here')
    run = tmp_path / 'run'

    result = pretrain(tmp_path / 'empty', '--out', run, *TINY_MODEL)

    assert_user_error(result, 'no usable georeferenced raster', 'empty')
    assert not run.exists()


def test_config_file_round_trip_with_overrides(optical, tmp_path):
    first = tmp_path / 'first'
    assert pretrain(optical, '--out', first, *TINY_MODEL, '--steps', 3).exit_code == 0
    second = tmp_path / 'second'

    result = pretrain(
        '--config', first / 'config.yaml', '--out', second, '--steps', 5, '--seed', 7
    )

    assert result.exit_code == 0, result.output
    old = yaml.safe_load((first / 'config.yaml').read_text())
    new = yaml.safe_load((second / 'config.yaml').read_text())
    assert new == {**old, 'out': str(second), 'steps': 5, 'seed': 7}
    assert steps(second) == [1, 2, 3, 4, 5]
    _, metadata = load_model_file(second / 'pretrained.safetensors')
    assert metadata['model']['model_args'] == {
        'depth': 2,
        'embed_dim': 64,
        'num_heads': 2,
    }
    assert metadata['model']['decoder_embed_dim'] == 32


def test_config_file_with_an_unknown_key(optical, tmp_path):
    config = tmp_path / 'config.yaml'
    config.write_text(
        yaml.safe_dump(
            {'paths': [str(optical)], 'out': str(tmp_path / 'run'), 'stpes': 5}
        )
    )

    result = pretrain('--config', config)

    assert_user_error(result, 'unknown configuration keys: stpes')
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize(
    ('key', 'value', 'expected'),
    [
        ('steps', 'ten', "'steps' must be an integer or null, got 'ten'"),
        ('norm_pix_loss', 'yes please', "'norm_pix_loss' must be true or false"),
        ('crop_scale', [0.2], "'crop_scale' must be a list of 2 (a number, a number)"),
        ('batch_size', True, "'batch_size' must be an integer, got True"),
    ],
)
def test_config_file_with_a_wrong_type(optical, tmp_path, key, value, expected):
    config = tmp_path / 'config.yaml'
    config.write_text(
        yaml.safe_dump(
            {'paths': [str(optical)], 'out': str(tmp_path / 'run'), key: value}
        )
    )

    result = pretrain('--config', config)

    assert_user_error(result, f'configuration key {expected}')
    assert not (tmp_path / 'run').exists()


def test_config_file_that_is_not_a_mapping(tmp_path):
    config = tmp_path / 'config.yaml'
    config.write_text('- just\n- a list\n')

    assert_user_error(pretrain('--config', config), 'not a YAML mapping')


def test_out_is_required(optical):
    assert_user_error(pretrain(optical, *TINY_MODEL), 'missing configuration: out')


def test_bad_model_arg_is_a_usage_error(optical, tmp_path):
    result = pretrain(optical, '--out', tmp_path / 'run', '--model-arg', 'depth')

    assert result.exit_code == 2
    assert "'depth' is not KEY=VALUE" in result.output


def test_gradient_accumulation_logs_one_row_per_step(optical, tmp_path):
    run = tmp_path / 'run'
    result = pretrain(
        optical, '--out', run, *TINY_MODEL, '--steps', 2, '--accumulate', 2
    )

    assert result.exit_code == 0, result.output
    state, metadata = load_model_file(run / 'pretrained.safetensors')
    assert metadata['training']['steps'] == 2
    assert all(torch.isfinite(v).all() for v in state.values())
    assert steps(run) == [1, 2]  # one row per optimiser step, none at step 0
    assert np.isfinite(lrs(run)).all()


# Image chips (no georeferencing), alone or beside georeferenced rasters.


def test_pretrains_on_a_folder_of_chips_mixed_with_a_geotiff(tmp_path, rng):
    import rasterio
    from PIL import Image

    data = tmp_path / 'data'
    for i in range(4):
        for suffix, side in (('jpg', 24), ('png', 48)):
            folder = data / ('forest' if i % 2 else 'river')
            folder.mkdir(parents=True, exist_ok=True)
            chip = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
            Image.fromarray(chip).save(folder / f'{i}.{suffix}')
        with rasterio.open(
            data / f'ms{i}.tif', 'w', driver='GTiff', width=40, height=40, count=4,
            dtype='uint16',
        ) as dst:  # fmt: skip
            dst.write(rng.integers(1, 5000, (4, 40, 40), dtype=np.uint16))
    write_sample_rasters(tmp_path / 'geo', size=64)

    run = tmp_path / 'run'
    result = pretrain(
        data, tmp_path / 'geo' / 'optical', '--out', run, *TINY_MODEL, '--steps', 6
    )

    assert result.exit_code == 0, result.output
    assert 'WARNING: skipping' not in result.output
    _, metadata = load_model_file(run / 'pretrained.safetensors')
    sensors = metadata['sensors']
    assert {name: s['in_chans'] for name, s in sensors.items()} == {
        '3band-uint8': 3,
        '4band-uint16': 4,
        '4band-uint16-blue-green-red-nir': 4,
    }
    assert sensors['3band-uint8']['crs'] is None
    assert sensors['4band-uint16-blue-green-red-nir']['crs'] is not None
    assert len(steps(run)) == 6
