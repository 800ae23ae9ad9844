"""What a run says at the default verbosity: its settings once, no third-party noise."""

import subprocess
import sys
from pathlib import Path

import pytest

from dspt_geo.data.synthetic import write_sample_rasters


def test_finetune_states_its_peak_lr_and_class_weights_once(
    labelled, tiny, cli_run, tmp_path
):
    result = cli_run(
        'finetune', 'segment', *tiny.data(labelled, 'segment'), '--out', tmp_path / 'run',
        *tiny.vit, *tiny.heads['segment'], '--image-size', '32', '--steps', '2',
        '--batch-size', '8', '--class-weights', 'median',
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    # base-lr 1e-3 x batch 8 / 256: the pre-training warning, word for word.
    (lr,) = [line for line in lines if line.startswith('INFO: peak learning rate')]
    assert lr == 'INFO: peak learning rate 3.13e-05 (--base-lr 0.001 x batch 8 / 256)'
    (low,) = [line for line in lines if 'is low for a short' in line]
    assert low.startswith('WARNING:') and 'consider --lr 0.001' in low
    (weights,) = [line for line in lines if 'class weights' in line]
    assert 'median frequency' in weights
    assert weights.startswith('INFO:')
    assert weights.split('): ')[1].count(',') == 2, 'one weight per class'


def test_finetune_says_when_no_class_weights_are_used(
    labelled, tiny, cli_run, tmp_path
):
    result = cli_run(
        'finetune', 'segment', *tiny.data(labelled, 'segment'), '--out', tmp_path / 'run',
        *tiny.vit, *tiny.heads['segment'], '--image-size', '32', '--steps', '1',
        '--class-weights', 'none', '--lr', '1e-3',
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stderr.count('class weights: none (--class-weights none)') == 1
    assert result.stderr.count('peak learning rate 0.001 (--lr)') == 1
    assert 'is low' not in result.stderr


@pytest.fixture(scope='module')
def optical(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp('sample')
    write_sample_rasters(folder, size=128)
    return folder / 'optical'


def _pretrain(optical, run, env, *options, verbosity=()):
    exe = Path(sys.executable).parent / 'dspt-geo'
    done = subprocess.run(
        [
            str(exe), *verbosity, 'pretrain', str(optical), '--out', str(run),
            '--model', 'vit_tiny_patch16_224', '--model-arg', 'depth=1',
            '--model-arg', 'embed_dim=32', '--model-arg', 'num_heads=2',
            '--decoder-depth', '1', '--decoder-dim', '32', '--decoder-heads', '2',
            '--image-size', '32', '--patch-size', '8', '--batch-size', '4',
            '--samples-per-epoch', '8', '--num-workers', '0', '--accelerator', 'cpu',
            '--lr', '1e-3', '--checkpoint-every', '2', '--steps', '3', *options,
        ],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.mark.slow
def test_default_verbosity_shows_no_third_party_warnings(
    optical, subprocess_env, tmp_path
):
    # A run that ends mid-epoch (3 steps, 2 per epoch), then resumed with another
    # checkpoint period: Lightning's resume warnings too.
    first = _pretrain(optical, tmp_path / 'run', subprocess_env)
    resumed = _pretrain(
        optical, tmp_path / 'run', subprocess_env, '--resume', '--steps', '4',
        '--checkpoint-every', '3',
    )  # fmt: skip
    debug = _pretrain(optical, tmp_path / 'debug', subprocess_env, verbosity=['-vv'])

    for stderr in (first, resumed):
        assert 'LeafSpec' not in stderr
        assert 'UserWarning' not in stderr and 'warnings.warn' not in stderr
        assert 'exists and is not empty' not in stderr
    assert 'LeafSpec' in debug, 'kept with -vv'
