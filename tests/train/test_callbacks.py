"""MetricsCSV on its own: rows per step, and its file across a resume."""

from types import SimpleNamespace

import pytest
import torch

from dspt_geo.train.callbacks import MetricsCSV


class FakeTrainer(SimpleNamespace):
    """The attributes of a Lightning Trainer that MetricsCSV reads."""

    def __init__(self, global_step: int = 0) -> None:
        optimizer = SimpleNamespace(param_groups=[{'lr': 1e-3}])
        super().__init__(
            global_step=global_step,
            is_global_zero=True,
            world_size=1,
            current_epoch=0,
            optimizers=[optimizer],
        )


class FakeModule:
    def log(self, *args: object, **kwargs: object) -> None:
        pass


BATCH = {'image': torch.zeros(4, 2, 8, 8), 'sensor': 'sar'}


def train(
    callback: MetricsCSV, trainer: FakeTrainer, batches: int, accumulate: int = 1
) -> None:
    """Call the batch hook as Lightning does: the step advances every *accumulate*."""
    for i in range(batches):
        if (i + 1) % accumulate == 0:
            trainer.global_step += 1
        callback.on_train_batch_end(trainer, FakeModule(), torch.tensor(0.5), BATCH, i)


def steps(callback: MetricsCSV) -> list[int]:
    lines = callback.path.read_text().splitlines()
    assert lines[0] == ','.join(MetricsCSV.FIELDS)
    return [int(line.split(',')[0]) for line in lines[1:]]


@pytest.mark.parametrize('accumulate', [1, 3])
def test_one_row_every_n_optimiser_steps(tmp_path, accumulate):
    callback, trainer = (
        MetricsCSV(tmp_path / 'metrics.csv', every_n_steps=5),
        FakeTrainer(),
    )
    callback.on_train_start(trainer, FakeModule())

    train(callback, trainer, batches=20 * accumulate, accumulate=accumulate)

    assert steps(callback) == [5, 10, 15, 20]


@pytest.mark.parametrize('accumulate', [1, 3])
def test_resume_drops_rows_after_the_checkpoint_and_repeats_none(tmp_path, accumulate):
    path = tmp_path / 'metrics.csv'
    killed, trainer = MetricsCSV(path, every_n_steps=1), FakeTrainer()
    killed.on_train_start(trainer, FakeModule())
    train(killed, trainer, batches=13 * accumulate, accumulate=accumulate)
    assert steps(killed) == list(range(1, 14))

    # Killed after step 13; the last checkpoint was at step 10.
    resumed, trainer = MetricsCSV(path, every_n_steps=1), FakeTrainer(global_step=10)
    resumed.on_train_start(trainer, FakeModule())
    assert steps(resumed) == list(range(1, 11))
    train(resumed, trainer, batches=5 * accumulate, accumulate=accumulate)

    assert steps(resumed) == list(range(1, 16))
    assert [p.name for p in tmp_path.iterdir()] == ['metrics.csv']


def test_only_the_first_process_writes(tmp_path):
    callback, trainer = (
        MetricsCSV(tmp_path / 'metrics.csv', every_n_steps=1),
        FakeTrainer(),
    )
    trainer.is_global_zero = False
    callback.on_train_start(trainer, FakeModule())

    train(callback, trainer, batches=3)

    assert not callback.path.exists()
