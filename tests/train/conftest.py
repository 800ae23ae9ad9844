"""Sample rasters, a tiny model's settings, and ways to run ``dspt-geo pretrain``."""

import csv
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result
from dspt_geo_cli.main import cli

from dspt_geo.data.synthetic import write_sample_rasters

#: A ViT and decoder small enough to train for dozens of steps in seconds on a CPU.
TINY_MODEL = [
    '--model', 'vit_tiny_patch16_224',
    '--model-arg', 'depth=2', '--model-arg', 'embed_dim=64', '--model-arg', 'num_heads=2',
    '--decoder-depth', '1', '--decoder-dim', '32', '--decoder-heads', '2',
    '--image-size', '32', '--patch-size', '8', '--batch-size', '8',
    '--samples-per-epoch', '1000', '--lr', '1e-3',
    '--num-workers', '0', '--accelerator', 'cpu', '--log-every', '1',
]  # fmt: skip


@pytest.fixture(scope='session')
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic landscape: ``optical/`` (4 bands, 128 px) and ``sar/`` (VV, VH)."""
    folder = tmp_path_factory.mktemp('sample')
    write_sample_rasters(folder, size=128)
    return folder


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Train on one thread, in this process and in the ones it starts.

    Tiny models gain nothing from threads, and on a busy 2-core machine two
    spinning threads per process make a step 20x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def pretrain_cli() -> Callable[..., Result]:
    """Run ``dspt-geo [-v] pretrain ARGS`` in this process."""

    def invoke(*args: Any, verbose: bool = False) -> Result:
        options = ['-v'] if verbose else []
        return CliRunner().invoke(cli, [*options, 'pretrain', *map(str, args)])

    return invoke


@pytest.fixture(scope='session')
def dspt_geo_exe() -> Path:
    """The installed console script, which Lightning's DDP launcher can re-run."""
    path = Path(sys.executable).parent / 'dspt-geo'
    assert path.exists(), f'{path} missing: pip install -e .'
    return path


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment of a pretrain subprocess: one thread, offline."""
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}


def _read_metrics(run: Path) -> list[dict[str, str]]:
    with (run / 'metrics.csv').open(newline='') as file:
        return list(csv.DictReader(file))


@pytest.fixture
def read_metrics() -> Callable[[Path], list[dict[str, str]]]:
    """Read the rows of ``RUN/metrics.csv``."""
    return _read_metrics


@pytest.fixture(scope='session')
def tiny_model() -> tuple[str, ...]:
    """CLI options of a tiny model and run (see :data:`TINY_MODEL`)."""
    return tuple(TINY_MODEL)
