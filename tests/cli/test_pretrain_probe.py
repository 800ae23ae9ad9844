"""``dspt-geo pretrain --probe-images``: a k-NN probe while pre-training (issue 12)."""

import csv
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from dspt_geo_cli.main import cli

import dspt_geo.train.probe_callback as callback_module
from dspt_geo.data.synthetic import write_sample_chips, write_sample_rasters
from dspt_geo.models import load_model_file
from dspt_geo.train.probe_callback import KNNProbe

TINY_MODEL = [
    '--model', 'vit_tiny_patch16_224',
    '--model-arg', 'depth=2', '--model-arg', 'embed_dim=32', '--model-arg', 'num_heads=2',
    '--decoder-depth', '1', '--decoder-dim', '32', '--decoder-heads', '2',
    '--image-size', '32', '--patch-size', '8', '--batch-size', '8',
    '--samples-per-epoch', '1000', '--lr', '1e-3',
    '--num-workers', '0', '--accelerator', 'cpu', '--log-every', '1',
]  # fmt: skip


def test_probe_rows_curve_and_best_export(tmp_path: Path) -> None:
    write_sample_rasters(tmp_path / 'data', size=128)
    chips = tmp_path / 'chips'
    write_sample_chips(chips, size=128, chip=16)
    run = tmp_path / 'run'
    result = CliRunner().invoke(
        cli,
        [
            'pretrain',
            str(tmp_path / 'data' / 'optical'),
            '--out',
            str(run),
            *TINY_MODEL,
            '--steps',
            '6',
            '--probe-images',
            str(chips),
            '--probe-every',
            '3',
            '--keep-best-probe',
        ],
    )
    assert result.exit_code == 0, result.output
    with (run / 'metrics.csv').open(newline='') as file:
        rows = [r for r in csv.DictReader(file) if r['probe_knn']]
    assert [int(r['step']) for r in rows] == [0, 3, 6]
    accuracies = [float(r['probe_knn']) for r in rows]
    assert all(0 <= a <= 1 for a in accuracies)
    png = (run / 'previews' / 'probe.png').read_bytes()
    assert png.startswith(b'\x89PNG')
    best_state, best_meta = load_model_file(run / 'pretrained.safetensors')
    last_state, last_meta = load_model_file(run / 'pretrained-last.safetensors')
    probe = best_meta['training']['probe']
    assert probe['knn_accuracy'] == [
        [s, a] for s, a in zip([0, 3, 6], accuracies, strict=True)
    ]
    assert accuracies[[0, 3, 6].index(probe['best_step'])] == max(accuracies)
    assert probe['exported'] == 'best'
    assert last_meta['training']['probe']['exported'] == 'last'
    same = all(torch.equal(best_state[k], last_state[k]) for k in last_state)
    assert same == (probe['best_step'] == 6)


def test_probe_bands_must_fit_a_group(tmp_path: Path) -> None:
    write_sample_rasters(tmp_path / 'data', size=128)
    chips = tmp_path / 'chips'
    profile = {
        'driver': 'GTiff',
        'width': 16,
        'height': 16,
        'count': 2,
        'dtype': 'uint8',
    }
    for index, name in enumerate(('a', 'a', 'b', 'b')):
        (chips / name).mkdir(parents=True, exist_ok=True)
        with rasterio.open(chips / name / f'{index}.tif', 'w', **profile) as dst:
            dst.write(np.full((2, 16, 16), index, np.uint8))
    result = CliRunner().invoke(
        cli,
        [
            'pretrain',
            str(tmp_path / 'data' / 'optical'),
            '--out',
            str(tmp_path / 'run'),
            *TINY_MODEL,
            '--steps',
            '2',
            '--probe-images',
            str(chips),
        ],
    )
    assert result.exit_code == 1
    assert '--probe-images have 2 bands' in result.output


def test_warns_when_below_step_zero_after_warmup(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = KNNProbe(
        SimpleNamespace(),  # type: ignore[arg-type]
        SimpleNamespace(),  # type: ignore[arg-type]
        'image',
        every_n_steps=10,
        folder=Path('unused'),
        warmup_steps=10,
    )
    values = iter([0.5, 0.4, 0.45, 0.6])
    probe.probe = lambda module: next(values)  # type: ignore[method-assign]
    module = SimpleNamespace(model=torch.nn.Linear(2, 2))
    curves = []
    monkeypatch.setattr(
        callback_module,
        'write_probe_curve',
        lambda history, path: curves.append(list(history)),
    )

    def at(step: int) -> SimpleNamespace:
        return SimpleNamespace(
            global_step=step, is_global_zero=True, current_epoch=0, loggers=[]
        )

    with caplog.at_level(logging.WARNING, logger='dspt_geo.train.probe_callback'):
        for step in (0, 10):  # step 10 is still warm-up: no warning
            probe._run(at(step), module)
        assert not caplog.records
        for step in (20, 30):
            probe._run(at(step), module)
    warnings = [r for r in caplog.records if 'below its step-0 value' in r.getMessage()]
    assert len(warnings) == 1 and 'step 20' in warnings[0].getMessage()
    assert probe.best_step == 30 and curves[-1] == [
        (0, 0.5),
        (10, 0.4),
        (20, 0.45),
        (30, 0.6),
    ]
