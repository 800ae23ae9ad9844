"""``--logger csv|tensorboard|mlflow`` of pretrain and finetune (issue 13, point 6)."""

import csv
import importlib.util
from pathlib import Path

import pytest

PRETRAIN = (
    '--model', 'vit_tiny_patch16_224', '--model-arg', 'depth=2',
    '--model-arg', 'embed_dim=32', '--model-arg', 'num_heads=2',
    '--decoder-depth', 1, '--decoder-dim', 16, '--decoder-heads', 2,
    '--image-size', 32, '--patch-size', 8, '--batch-size', 8, '--lr', '1e-3',
    '--steps', 4, '--samples-per-epoch', 16, '--num-workers', 0,
    '--accelerator', 'cpu', '--log-every', 1,
)  # fmt: skip

needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec('tensorboard') is None,
    reason="tensorboard is not installed (pip install 'dspt-geo[tensorboard]')",
)
needs_mlflow = pytest.mark.skipif(
    importlib.util.find_spec('mlflow') is None,
    reason="mlflow is not installed (pip install 'dspt-geo[mlflow]')",
)


def finetune_classify(cli_run, labelled, tiny, out: Path, *options: object):
    return cli_run(
        'finetune', 'classify', *tiny.data(labelled, 'classify'), '--out', out,
        *tiny.vit, '--image-size', 32, '--steps', 4, '--batch-size', 8,
        '--val-every', 2, '--log-every', 1, *options,
    )  # fmt: skip


def tensorboard_events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={'images': 0, 'scalars': 0})
    events.Reload()
    return events


def test_csv_logger_writes_lightnings_csv_beside_metrics_csv(
    labelled, tiny, cli_run, tmp_path
):
    run = tmp_path / 'run'
    result = finetune_classify(cli_run, labelled, tiny, run, '--logger', 'csv')

    assert result.exit_code == 0, result.output
    with (run / 'logs' / 'csv' / 'metrics.csv').open(newline='') as file:
        rows = list(csv.DictReader(file))
    assert {'loss', 'val_accuracy', 'step'} <= set(rows[0])
    assert [row['val_accuracy'] for row in rows if row['val_accuracy']]
    assert any(name.startswith('lr-') for name in rows[0])  # learning rates
    with (run / 'metrics.csv').open(newline='') as file:  # the local file stays
        assert [row['loss'] for row in csv.DictReader(file) if row['loss']]


def test_no_logger_by_default(labelled, tiny, cli_run, tmp_path):
    run = tmp_path / 'run'
    result = finetune_classify(cli_run, labelled, tiny, run)

    assert result.exit_code == 0, result.output
    assert not (run / 'logs').exists()
    assert (run / 'metrics.csv').exists()


@needs_tensorboard
def test_tensorboard_gets_scalars_and_the_pretraining_previews(
    labelled, cli_run, tmp_path
):
    run = tmp_path / 'run'
    result = cli_run(
        'pretrain', labelled.shapes / 'images', '--out', run, *PRETRAIN,
        '--logger', 'tensorboard',
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    events = tensorboard_events(run / 'logs' / 'tensorboard')
    tags = events.Tags()
    assert 'loss' in tags['scalars']
    previews = [tag for tag in tags['images'] if tag.startswith('preview/')]
    assert previews == ['preview/3band-uint8']
    image = events.Images(previews[0])[-1]
    png = max((run / 'previews').glob('*.png'))
    from PIL import Image

    assert (image.width, image.height) == Image.open(png).size
    assert (run / 'metrics.csv').exists()


@needs_tensorboard
def test_tensorboard_gets_the_confusion_matrix(labelled, tiny, cli_run, tmp_path):
    run = tmp_path / 'run'
    result = finetune_classify(cli_run, labelled, tiny, run, '--logger', 'tensorboard')

    assert result.exit_code == 0, result.output
    events = tensorboard_events(run / 'logs' / 'tensorboard')
    assert {'loss', 'val_accuracy'} <= set(events.Tags()['scalars'])
    confusion = events.Images('val_confusion')
    assert [event.step for event in confusion] == [2, 4]


@needs_mlflow
def test_mlflow_gets_metrics_and_the_confusion_matrix(
    labelled, tiny, cli_run, tmp_path, monkeypatch
):
    monkeypatch.delenv('MLFLOW_TRACKING_URI', raising=False)
    run = tmp_path / 'run'
    result = finetune_classify(cli_run, labelled, tiny, run, '--logger', 'mlflow')

    assert result.exit_code == 0, result.output
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'true')
    client = MlflowClient(f'file:{run / "logs" / "mlruns"}')
    experiment = client.get_experiment_by_name('dspt-geo')
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == 'run'
    assert {'loss', 'val_accuracy'} <= set(found.data.metrics)
    artifacts = [
        a.path for a in client.list_artifacts(found.info.run_id, 'val_confusion')
    ]
    assert len(artifacts) == 2 and all(p.endswith('.png') for p in artifacts)


def test_a_missing_logger_package_is_one_hint(
    labelled, tiny, cli_run, user_error, tmp_path, monkeypatch
):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        'find_spec',
        lambda name, *args: None if name == 'tensorboard' else real(name, *args),
    )
    result = finetune_classify(
        cli_run, labelled, tiny, tmp_path / 'run', '--logger', 'tensorboard'
    )

    user_error(result, '--logger tensorboard', 'pip install "dspt-geo[tensorboard]"')
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize(
    'logger',
    [
        pytest.param('tensorboard', marks=needs_tensorboard),
        pytest.param('mlflow', marks=needs_mlflow),
    ],
)
def test_the_probe_curve_is_an_image_in_the_logger(
    logger, cli_run, tmp_path, monkeypatch
):
    from dspt_geo.data.synthetic import write_sample_chips, write_sample_rasters

    monkeypatch.delenv('MLFLOW_TRACKING_URI', raising=False)
    write_sample_rasters(tmp_path / 'data', size=64)
    write_sample_chips(tmp_path / 'chips', size=64, chip=16)
    run = tmp_path / 'run'
    result = cli_run(
        'pretrain', tmp_path / 'data' / 'optical', '--out', run, *PRETRAIN,
        '--probe-images', tmp_path / 'chips', '--probe-every', 2, '--logger', logger,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert (run / 'previews' / 'probe.png').exists()  # the run folder's file stays
    if logger == 'tensorboard':
        events = tensorboard_events(run / 'logs' / 'tensorboard')
        assert [event.step for event in events.Images('probe_knn')] == [0, 2, 4]
        return
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'true')
    client = MlflowClient(f'file:{run / "logs" / "mlruns"}')
    experiment = client.get_experiment_by_name('dspt-geo')
    (found,) = client.search_runs([experiment.experiment_id])
    artifacts = [a.path for a in client.list_artifacts(found.info.run_id, 'probe_knn')]
    assert artifacts == [f'probe_knn/step{step:07d}.png' for step in (0, 2, 4)]
