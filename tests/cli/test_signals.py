"""A run stopped by a signal: a checkpoint, exit status 128 + signal, and a resume.

The runs go through the console script in a subprocess, which the test signals
once training is under way (its first periodic checkpoint is on disk).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dspt_geo.data.synthetic import write_sample_rasters
from dspt_geo.models import load_model_file

#: Long enough that a run cannot finish between a poll and the signal.
STEPS, EVERY = 120, 10

#: The tiny pre-training run of ``tests/train``.
TINY_PRETRAIN = [
    '--model', 'vit_tiny_patch16_224',
    '--model-arg', 'depth=2', '--model-arg', 'embed_dim=64', '--model-arg', 'num_heads=2',
    '--decoder-depth', '1', '--decoder-dim', '32', '--decoder-heads', '2',
    '--image-size', '32', '--patch-size', '8', '--batch-size', '8',
    '--samples-per-epoch', '1000', '--lr', '1e-3',
    '--num-workers', '0', '--accelerator', 'cpu', '--log-every', '1',
]  # fmt: skip


def _step(run: Path) -> int:
    """The step of ``last.ckpt`` (written atomically), 0 before the first."""
    last = run / 'checkpoints' / 'last.ckpt'
    if not last.exists():
        return 0
    return int(torch.load(last, weights_only=True)['global_step'])


def _stop_mid_run(
    args: list[str], run: Path, signum: int, env: dict[str, str], group: bool = False
):
    """Start ``dspt-geo ARGS``, signal it after its first checkpoint, wait for it.

    With *group*, the run gets a process group of its own and the whole group is
    signalled (Ctrl+C in a terminal, ``timeout``, ``scancel``), DataLoader workers
    included.
    """
    exe = Path(sys.executable).parent / 'dspt-geo'
    process = subprocess.Popen(
        [str(exe), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=group,
    )
    try:
        deadline = time.monotonic() + 240
        while _step(run) < EVERY:
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, 'no first checkpoint in time'
            time.sleep(0.01)
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stderr


@pytest.fixture(scope='module')
def optical(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp('sample')
    write_sample_rasters(folder, size=128)
    return folder / 'optical'


def _assert_stopped(returncode, stderr, run, signum, model_file):
    assert returncode == 128 + signum, stderr[-3000:]
    assert 'Traceback' not in stderr, stderr[-3000:]
    assert not (run / model_file).exists(), 'finished before the signal'
    step = _step(run)
    assert EVERY <= step < STEPS
    (line,) = [line for line in stderr.splitlines() if line.startswith('Stopped:')]
    name = signal.Signals(signum).name
    assert f'stopped by {name} at step {step}' in line, line
    assert f'saved {run / "checkpoints" / "last.ckpt"}' in line, line
    assert f'To resume, run the same command again (same --out {run})' in line
    return step


@pytest.mark.slow
def test_pretrain_stopped_by_sigterm_resumes(
    optical, subprocess_env, cli_run, tmp_path
):
    run = tmp_path / 'run'
    args = [
        'pretrain', str(optical), '--out', str(run), *TINY_PRETRAIN,
        '--steps', str(STEPS), '--checkpoint-every', str(EVERY),
    ]  # fmt: skip

    returncode, stderr = _stop_mid_run(args, run, signal.SIGTERM, subprocess_env)

    assert returncode == 143
    step = _assert_stopped(
        returncode, stderr, run, signal.SIGTERM, 'pretrained.safetensors'
    )
    result = cli_run(*args, verbose=True)
    assert result.exit_code == 0, result.output
    assert 'resuming from' in result.stderr
    _, metadata = load_model_file(run / 'pretrained.safetensors')
    assert metadata['training']['steps'] == STEPS > step
    with (run / 'metrics.csv').open() as file:
        steps = [int(line.split(',')[0]) for line in list(file)[1:]]
    assert steps == list(range(1, STEPS + 1)), 'no step lost or repeated'


@pytest.mark.slow
def test_sigterm_to_the_process_group_stops_workers_and_run_cleanly(
    optical, subprocess_env, cli_run, tmp_path
):
    run = tmp_path / 'run'
    args = [
        'pretrain', str(optical), '--out', str(run), *TINY_PRETRAIN,
        '--steps', str(STEPS), '--checkpoint-every', str(EVERY),
        '--num-workers', '1',  # the later option wins: one DataLoader worker
    ]  # fmt: skip

    returncode, stderr = _stop_mid_run(
        args, run, signal.SIGTERM, subprocess_env, group=True
    )

    assert 'DataLoader worker' not in stderr, stderr[-3000:]
    _assert_stopped(returncode, stderr, run, signal.SIGTERM, 'pretrained.safetensors')
    result = cli_run(*args)
    assert result.exit_code == 0, result.output
    _, metadata = load_model_file(run / 'pretrained.safetensors')
    assert metadata['training']['steps'] == STEPS


@pytest.mark.slow
def test_finetune_stopped_by_sigint_resumes(
    labelled, tiny, subprocess_env, cli_run, tmp_path
):
    run = tmp_path / 'run'
    args = [
        'finetune', 'segment', *map(str, tiny.data(labelled, 'segment')),
        '--out', str(run), *tiny.vit, *tiny.heads['segment'], '--image-size', '32',
        '--batch-size', '16', '--lr', '3e-3', '--val-every', '60',
        '--steps', str(STEPS), '--checkpoint-every', str(EVERY),
    ]  # fmt: skip

    returncode, stderr = _stop_mid_run(args, run, signal.SIGINT, subprocess_env)

    assert returncode == 130
    _assert_stopped(returncode, stderr, run, signal.SIGINT, 'model.safetensors')
    result = cli_run(*args)
    assert result.exit_code == 0, result.output
    _, metadata = load_model_file(run / 'model.safetensors')
    assert metadata['training']['steps'] == STEPS
    assert metadata['training']['final']['step'] == STEPS


@pytest.mark.slow
def test_slurm_preemption_signal_stops_the_same_way(optical, subprocess_env, tmp_path):
    run = tmp_path / 'run'
    args = [
        'pretrain', str(optical), '--out', str(run), *TINY_PRETRAIN,
        '--steps', str(STEPS), '--checkpoint-every', str(EVERY),
    ]  # fmt: skip

    returncode, stderr = _stop_mid_run(args, run, signal.SIGUSR1, subprocess_env)

    assert returncode == 138
    _assert_stopped(returncode, stderr, run, signal.SIGUSR1, 'pretrained.safetensors')
