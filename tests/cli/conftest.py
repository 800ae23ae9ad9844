"""Labelled sample data with a learnable signal, and tiny fine-tuning runs.

The data is made so that a tiny ViT learns it in seconds on a CPU: chips of three
classes that differ in brightness and texture, scenes with bright squares and
grey discs as segmentation masks, scenes with bright squares as detection boxes.
The runs are trained once per session and shared by the tests that read them.
"""

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from click.testing import CliRunner, Result
from dspt_geo_cli.main import cli
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

#: A ViT small enough to fine-tune for dozens of steps in seconds on a CPU.
TINY_VIT = [
    '--model', 'vit_tiny_patch16_224',
    '--model-arg', 'depth=2', '--model-arg', 'embed_dim=32', '--model-arg', 'num_heads=2',
    '--patch-size', '8', '--num-workers', '0', '--accelerator', 'cpu', '--log-every', '5',
]  # fmt: skip

#: The default heads (they follow the encoder and the tile), with few proposals at
#: test time for quick validation.
TINY_HEADS = {
    'classify': [],
    'segment': [],
    'detect': [
        '--head-arg',
        'detector_args={rpn_pre_nms_top_n_test: 300, rpn_post_nms_top_n_test: 100}',
    ],
}

#: The learnable runs: image size, length, batch, lr, validation interval; the
#: segmentation discs cover a few percent of the scenes, the case median-frequency
#: weights are for (no class weights by default since issue 13: mIoU 0.45 vs > 0.6).
RUNS = {
    'classify': [
        '--image-size', '32', '--steps', '40', '--batch-size', '16',
        '--lr', '3e-3', '--val-every', '20',
    ],
    'segment': [
        '--image-size', '32', '--steps', '120', '--batch-size', '16',
        '--lr', '3e-3', '--val-every', '60', '--class-weights', 'median',
    ],
    'detect': [
        '--image-size', '64', '--steps', '60', '--batch-size', '8',
        '--lr', '3e-3', '--val-every', '30',
    ],
}  # fmt: skip

UTM = 'EPSG:32633'


@contextmanager
def one_thread() -> Iterator[None]:
    """Train on one thread: tiny models gain nothing from threads on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def dspt_geo(*args: Any, verbose: bool = False) -> Result:
    """Run ``dspt-geo [-v] ARGS`` in this process."""
    options = ['-v'] if verbose else []
    return CliRunner().invoke(cli, [*options, *map(str, args)])


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit code 1, one message naming *fragments*, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert 'Traceback' not in result.output
    assert result.output.count('Error:') == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


# -- data ------------------------------------------------------------------------


def write_tif(
    path: Path,
    data: np.ndarray,
    origin: tuple[float, float] | None = (500_000.0, 5_000_000.0),
    res: float = 10.0,
) -> Path:
    """Write (bands, rows, cols) *data* as a GeoTIFF, georeferenced unless no origin."""
    data = data[None] if data.ndim == 2 else data
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NotGeoreferencedWarning)
        with rasterio.open(
            path,
            'w',
            driver='GTiff',
            width=data.shape[2],
            height=data.shape[1],
            count=data.shape[0],
            dtype=data.dtype.name,
            crs=UTM if origin else None,
            transform=from_origin(*origin, res, res) if origin else None,
        ) as dst:
            dst.write(data)
    return path


def write_class_chips(
    root: Path, per_split: dict[str, int], seed: int, bands: int = 3
) -> Path:
    """Class folders of 32 px chips: dark, bright, and striped (mid brightness)."""
    rng = np.random.default_rng(seed)
    for split, count in per_split.items():
        for kind in ('bright', 'dark', 'stripes'):
            for i in range(count):
                base = rng.normal(0, 10, (bands, 32, 32)) + rng.normal(0, 15)
                match kind:
                    case 'dark':
                        chip = 60 + base
                    case 'bright':
                        chip = 190 + base
                    case _:
                        chip = np.full((bands, 32, 32), 60.0) + base
                        chip[:, ::2] += 130
                folder = root / split / kind if split else root / kind
                write_tif(
                    folder / f'{i}.tif', np.clip(chip, 0, 255).astype(np.uint8), None
                )
    return root


def write_shape_scenes(root: Path, count: int, seed: int, size: int = 128) -> Path:
    """Scenes of bright squares (1) and grey discs (2) on a dark ground (0).

    Writes ``images/`` and aligned label rasters in ``labels/``.
    """
    yy, xx = np.mgrid[:size, :size]
    for i in range(count):
        rng = np.random.default_rng(seed + i)
        image = rng.normal(60, 12, (3, size, size))
        labels = np.zeros((size, size), np.uint8)
        for _ in range(size * size // 300):
            side = int(rng.integers(10, 22))
            x, y = (int(v) for v in rng.integers(0, size - side, 2))
            if rng.random() < 0.5:
                labels[y : y + side, x : x + side] = 1
            else:
                disc = (yy - y - side / 2) ** 2 + (xx - x - side / 2) ** 2
                labels[disc < (side / 2) ** 2] = 2
        image[:, labels == 1] += 130
        image[:, labels == 2] += 60
        origin = (500_000.0 + i * 20_000, 5_000_000.0)
        write_tif(
            root / 'images' / f's{i}.tif',
            np.clip(image, 0, 255).astype(np.uint8),
            origin,
        )
        write_tif(root / 'labels' / f's{i}.tif', labels, origin)
    return root


def write_square_scenes(root: Path, count: int, seed: int, size: int = 128) -> Path:
    """Scenes with bright squares, 12-20 px, apart; their boxes in ``boxes.gpkg``."""
    boxes = []
    for i in range(count):
        rng = np.random.default_rng(seed + i)
        image = rng.normal(60, 12, (3, size, size))
        origin = (500_000.0 + i * 20_000, 5_000_000.0)
        placed: list[tuple[int, int, int]] = []
        for _ in range(size * size // 150):
            side = int(rng.integers(12, 21))
            x, y = (int(v) for v in rng.integers(1, size - side - 1, 2))
            if any(
                x < a + s + 3
                and a < x + side + 3
                and y < b + s + 3
                and b < y + side + 3
                for a, b, s in placed
            ):
                continue
            placed.append((x, y, side))
            image[:, y : y + side, x : x + side] += 130
            left, top = origin[0] + x * 10, origin[1] - y * 10
            boxes.append(shapely.box(left, top - side * 10, left + side * 10, top))
        write_tif(
            root / 'images' / f'd{i}.tif',
            np.clip(image, 0, 255).astype(np.uint8),
            origin,
        )
    gpd.GeoDataFrame(
        {'kind': ['square'] * len(boxes)}, geometry=boxes, crs=UTM
    ).to_file(root / 'boxes.gpkg')
    return root


@pytest.fixture(scope='session')
def labelled(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Training data and held-out test data of every task."""
    root = tmp_path_factory.mktemp('labelled')
    return SimpleNamespace(
        chips=write_class_chips(
            root / 'chips', {'train': 16, 'val': 8, 'test': 8}, seed=0
        ),
        shapes=write_shape_scenes(root / 'shapes', 2, seed=0),
        shapes_test=write_shape_scenes(root / 'shapes-test', 1, seed=100),
        squares=write_square_scenes(root / 'squares', 2, seed=0),
        squares_test=write_square_scenes(root / 'squares-test', 1, seed=100),
    )


def task_data(labelled: SimpleNamespace, task: str, test: bool = False) -> list[str]:
    """``--images`` and ``--labels`` options of a task's training or test data."""
    match task:
        case 'classify':
            return ['--images', labelled.chips / 'test' if test else labelled.chips]
        case 'segment':
            root = labelled.shapes_test if test else labelled.shapes
            return ['--images', root / 'images', '--labels', root / 'labels']
        case _:
            root = labelled.squares_test if test else labelled.squares
            return ['--images', root / 'images', '--labels', root / 'boxes.gpkg']


@pytest.fixture(scope='session')
def trained(
    labelled: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """The run folder of a task's learnable run, trained on first use."""
    runs: dict[str, Path] = {}

    def run(task: str) -> Path:
        if task not in runs:
            folder = tmp_path_factory.mktemp(task) / 'run'
            with one_thread():
                result = dspt_geo(
                    'finetune', task, *task_data(labelled, task), '--out', folder,
                    *TINY_VIT, *TINY_HEADS[task], *RUNS[task],
                )  # fmt: skip
            assert result.exit_code == 0, result.output
            runs[task] = folder
        return runs[task]

    return run


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment of a dspt-geo subprocess: one thread, offline."""
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}


@pytest.fixture(scope='session')
def cli_run() -> Callable[..., Result]:
    """Run ``dspt-geo [-v] ARGS`` in this process."""
    return dspt_geo


@pytest.fixture(scope='session')
def user_error() -> Callable[..., None]:
    """Assert a user error: exit 1, one message naming fragments, no traceback."""
    return assert_user_error


@pytest.fixture(scope='session')
def tiny() -> SimpleNamespace:
    """Options of the tiny runs, and the options of each task's data."""
    return SimpleNamespace(
        vit=tuple(TINY_VIT), heads=TINY_HEADS, runs=RUNS, data=task_data
    )


@pytest.fixture(scope='session')
def writers() -> SimpleNamespace:
    """The writers of the sample data, for tests that need their own."""
    return SimpleNamespace(
        tif=write_tif,
        chips=write_class_chips,
        shapes=write_shape_scenes,
        squares=write_square_scenes,
    )
