"""A run killed mid-way continues where its last checkpoint left it."""

import subprocess
import time

import pytest
import torch

from dspt_geo.models import load_model_file
from dspt_geo.train.optim import WarmupCosine

#: Long enough that the run cannot finish between a poll and the kill.
STEPS, EVERY, PEAK_LR = 120, 10, 1e-3


def _checkpointed_step(run) -> int:
    """The step of ``last.ckpt`` (written atomically), 0 before the first."""
    last = run / 'checkpoints' / 'last.ckpt'
    if not last.exists():
        return 0
    return torch.load(last, weights_only=True)['global_step']


@pytest.mark.slow
def test_resume_after_the_process_is_killed(
    sample_data, tmp_path, dspt_geo_exe, tiny_model, subprocess_env, pretrain_cli, read_metrics
):  # fmt: skip
    run = tmp_path / 'run'
    args = [
        sample_data / 'optical', '--out', run, *tiny_model,
        '--steps', STEPS, '--checkpoint-every', EVERY,
    ]  # fmt: skip
    log = tmp_path / 'killed.log'
    with log.open('w') as stderr:
        process = subprocess.Popen(
            [dspt_geo_exe, 'pretrain', *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=subprocess_env,
        )
        try:
            deadline = time.monotonic() + 180
            while _checkpointed_step(run) < 2 * EVERY:
                assert process.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, 'no checkpoint of step 20 in time'
                time.sleep(0.01)
        finally:
            process.kill()
            process.wait()
    assert not (run / 'pretrained.safetensors').exists(), 'finished before the kill'
    resumed_from = torch.load(run / 'checkpoints' / 'last.ckpt', weights_only=True)
    step = resumed_from['global_step']
    assert 2 * EVERY <= step < STEPS and step % EVERY == 0
    before = read_metrics(run)

    result = pretrain_cli(*args, verbose=True)

    assert result.exit_code == 0, result.output
    assert 'resuming from' in result.stderr
    _, metadata = load_model_file(run / 'pretrained.safetensors')
    assert metadata['training']['steps'] == STEPS
    rows = read_metrics(run)
    # One row per step, none repeated, none missing; the rows up to the checkpoint
    # are the killed run's, the next one is the checkpoint's step + 1.
    assert [int(row['step']) for row in rows] == list(range(1, STEPS + 1))
    assert rows[:step] == before[:step]
    epochs = [int(row['epoch']) for row in rows]
    assert epochs == sorted(epochs)
    # The schedule went on from the restored step, on the same curve.
    schedule = WarmupCosine(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK_LR),
        warmup_steps=STEPS // 20,
        total_steps=STEPS,
    )
    for row in rows:
        expected = PEAK_LR * schedule.factor(int(row['step']))
        assert float(row['lr']) == pytest.approx(expected, rel=1e-4, abs=1e-10), row
    # The optimiser's moments went on too: AdamW counted every step, not only the
    # ones after the resume.
    last = torch.load(run / 'checkpoints' / 'last.ckpt', weights_only=True)
    assert last['global_step'] == STEPS
    adam_steps = {int(s['step']) for s in last['optimizer_states'][0]['state'].values()}
    assert adam_steps == {STEPS}
