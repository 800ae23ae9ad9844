"""dspt-geo probe --task segment: per-patch-token probe scored as mIoU."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from dspt_geo_cli.main import cli
from rasterio.transform import from_origin

from dspt_geo.probe import probe
from dspt_geo.probe.features import patch_counts
from dspt_geo.probe.segment import mean_iou, patch_targets

from .conftest import PATCH, SIZE

#: Chip side: each chip is cut into 2 x 2 windows of the encoder's SIZE.
CHIP = 2 * SIZE
CHIPS = 30
IGNORE = 255


def _write(path: Path, array: np.ndarray, nodata: float, **profile: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 1 if array.ndim == 2 else array.shape[0]
    with rasterio.open(
        path, 'w', driver='GTiff', width=array.shape[-1], height=array.shape[-2],
        count=count, dtype=array.dtype, nodata=nodata, **profile,
    ) as dst:  # fmt: skip
        dst.write(array if array.ndim == 3 else array[None])


def _planted(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Image (3, CHIP, CHIP) and mask whose class per 8 px patch sits in band 3.

    Classes 1-3 set band 3 to 40 + 70 * k under noise; bands 1-2 are loud nuisance.
    In the top-left window, patch (0, 0) has no label (mask nodata) and patch (0, 1)
    no image (image nodata 0): both must count for nothing.
    """
    grid = CHIP // PATCH
    classes = rng.integers(1, 4, size=(grid, grid))
    mask = np.kron(classes, np.ones((PATCH, PATCH), dtype=np.int64)).astype(np.uint8)
    image = np.empty((3, CHIP, CHIP), dtype=np.float64)
    image[:2] = rng.uniform(20, 200, size=(2, 1, 1)) + rng.normal(
        0, 15, (2, CHIP, CHIP)
    )
    image[2] = 40 + 70 * (mask - 1) + rng.normal(0, 8, (CHIP, CHIP))
    image = np.clip(image, 1, 255).astype(np.uint8)
    mask[:PATCH, :PATCH] = IGNORE
    image[:, :PATCH, PATCH : 2 * PATCH] = 0
    return image, mask


@pytest.fixture(scope='module')
def planted_masks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """images/ and masks/ (paired by name) plus shuffled/: the masks of other chips."""
    root = tmp_path_factory.mktemp('segment')
    rng = np.random.default_rng(0)
    pairs = [_planted(rng) for _ in range(CHIPS)]
    order = rng.permutation(CHIPS)
    for index, (image, mask) in enumerate(pairs):
        _write(root / 'images' / f'chip_{index:02d}.tif', image, 0)
        _write(root / 'masks' / f'chip_{index:02d}.tif', mask, IGNORE)
        _write(
            root / 'shuffled' / f'chip_{index:02d}.tif', pairs[order[index]][1], IGNORE
        )
    return root


def _mean(report: dict, encoder: str, head: str, fraction: float) -> float:
    (row,) = [
        r['mean']
        for r in report['summary']
        if r['encoder'] == encoder and r['head'] == head and r['fraction'] == fraction
    ]
    return row


def test_planted_patch_signal_scores_high_shuffled_low(
    planted_masks: Path, trained_encoder: Path, tmp_path: Path
) -> None:
    kwargs = {
        'out': tmp_path, 'task': 'segment', 'split': 'auto',
        'fractions': (0.25, 1.0), 'seeds': (0, 1),
    }  # fmt: skip
    report = probe(
        [trained_encoder], [planted_masks / 'images'], [planted_masks / 'masks'],
        **kwargs,
    )  # fmt: skip
    assert report['metric'] == 'miou' and report['classes'] == ['1', '2', '3']
    # 30 chips split 18 / 6 / 6 by chip, each cut into 4 windows of SIZE px.
    assert report['splits'] == {'train': 72, 'val': 24, 'test': 24}
    # Each window has (SIZE / PATCH)^2 = 4 patches; in one window of 4 per chip, one
    # patch is unlabelled and one has no image: neither is a target.
    assert sum(report['train_class_counts']) == 4 * 72 - 2 * 72 // 4
    for encoder in (str(trained_encoder), 'random'):
        for head in ('logistic', 'knn'):
            assert _mean(report, encoder, head, 1.0) > 0.8, report['summary']
    # A quarter of the windows, stratified by their dominant class, at least one each.
    few = {r['train_labels'] for r in report['results'] if r['fraction'] == 0.25}
    assert len(few) == 1 and 3 <= few.pop() < 72 // 2
    shuffled = probe(
        [trained_encoder], [planted_masks / 'images'], [planted_masks / 'shuffled'],
        **kwargs,
    )  # fmt: skip
    for row in shuffled['summary']:
        # Masks of other chips: nothing to learn, near chance (1/3 accuracy, IoU lower).
        assert row['mean'] < 0.45, shuffled['summary']


def test_patch_counts_and_miou() -> None:
    mask = torch.tensor([[0, 0, 1, 1], [0, 9, 1, 2], [2, 2, 1, 1], [2, 2, 1, 1]])
    valid = torch.ones(4, 4, dtype=torch.bool)
    valid[0, 0] = False
    counts = patch_counts(mask[None], valid[None], 2, 3)
    # Patch 0: one pixel with no image, one ignored (9): two of class 0 remain.
    assert counts[0].tolist() == [[2, 0, 0], [0, 3, 1], [0, 0, 4], [0, 4, 0]]
    targets = patch_targets(counts.numpy())
    assert targets.tolist() == [[0, 1, 2, 1]]
    assert patch_targets(np.zeros((1, 3), dtype=np.int32)).tolist() == [-1]
    # The class-0 patch predicted 2: class 0 IoU 0; class 1 7/8; class 2 4/7 (its
    # pixel under patch 1 missed, the 2 class-0 pixels taken).
    miou, ious = mean_iou(np.array([2, 1, 2, 1]), counts[0].numpy(), 3)
    assert ious == pytest.approx([0.0, 7 / 8, 4 / 7])
    assert miou == pytest.approx((7 / 8 + 4 / 7) / 3)


def test_scene_labels_and_cli(trained_encoder: Path, tmp_path: Path) -> None:
    """A label raster over a georeferenced raster (UTM, uint16, nodata) via the CLI."""
    rng = np.random.default_rng(3)
    side = 8 * SIZE
    classes = rng.integers(0, 2, size=(side // PATCH, side // PATCH))
    label = np.kron(classes, np.ones((PATCH, PATCH), dtype=np.int64)).astype(np.uint8)
    image = np.empty((3, side, side), dtype=np.uint16)
    image[:2] = rng.integers(100, 2000, size=(2, side, side))
    image[2] = (
        500 + 800 * label.astype(np.int64) + rng.integers(0, 50, size=(side, side))
    )
    profile = {'crs': 'EPSG:32633', 'transform': from_origin(500000, 4000000, 10, 10)}
    _write(tmp_path / 'scene.tif', image, 0, **profile)
    _write(tmp_path / 'labels.tif', label, IGNORE, **profile)
    out = tmp_path / 'probe'
    args = [
        'probe', str(trained_encoder), '--images', str(tmp_path / 'scene.tif'),
        '--labels', str(tmp_path / 'labels.tif'), '--task', 'segment',
        '--split', 'blocks:320', '--out', str(out), '--label-fraction', '0.5', '1.0',
        '--seeds', '0', '1', '--head', 'logistic',
    ]  # fmt: skip
    result = CliRunner().invoke(cli, [*args, '--json'])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report['task'] == 'segment' and len(report['results']) == 2 * 2 * 2
    assert all(row['mean'] > 0.8 for row in report['summary']), report['summary']
    assert (out / 'probe.png').read_bytes().startswith(b'\x89PNG')
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].startswith('test miou')


def test_segment_without_labels(planted_masks: Path, trained_encoder: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            'probe', str(trained_encoder), '--images', str(planted_masks / 'images'),
            '--task', 'segment', '--out', str(planted_masks / 'none'),
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    assert '--task segment needs --labels' in result.output
    assert 'Traceback' not in result.output
