"""``dspt-geo finetune`` end to end: learning, the model file, resume, starting weights.

The learnable runs (see ``conftest.py``) train once per session; evaluation is
on held-out data drawn with other seeds.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from dspt_geo.models import load_finetuned, load_model_file, save_model_file
from dspt_geo.predict import PredictionSpec

TASKS = ('classify', 'segment', 'detect')

#: Metric on held-out data and the least value a run must reach. Measured over
#: data and training seeds 0-9: accuracy 0.96-1.0 (chance 0.33); mIoU 0.82-0.92
#: (all background scores about 0.17); mAP@0.5 0.87-1.0.
LEARNT = {'classify': ('accuracy', 0.85), 'segment': ('miou', 0.6), 'detect': ('map_50', 0.6)}  # fmt: skip


def read_rows(run: Path) -> list[dict[str, str]]:
    with (run / 'metrics.csv').open(newline='') as file:
        return list(csv.DictReader(file))


def evaluate_json(cli_run, model: Path, out: Path, *options: object) -> dict:
    result = cli_run('evaluate', model, *options, '--json', out)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


@pytest.mark.parametrize('task', TASKS)
def test_each_task_learns_its_signal(task, trained, labelled, tiny, cli_run, tmp_path):
    run = trained(task)
    name, least = LEARNT[task]

    report = evaluate_json(
        cli_run,
        run / 'model.safetensors',
        tmp_path / 'test.json',
        *tiny.data(labelled, task, test=True),
    )

    assert report['task'] == task
    assert report[name] > least, report
    assert report['split'] == 'all'


def test_classify_learns_with_mixup_and_records_its_recipe(
    labelled, tiny, cli_run, tmp_path
):
    run = tmp_path / 'run'
    result = cli_run(
        'finetune', 'classify', *tiny.data(labelled, 'classify'), '--out', run,
        *tiny.vit, *tiny.runs['classify'], '--mixup', '--random-erase', '0.5',
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    report = evaluate_json(
        cli_run,
        run / 'model.safetensors',
        tmp_path / 'test.json',
        *tiny.data(labelled, 'classify', test=True),
    )
    assert report['accuracy'] > LEARNT['classify'][1], report
    training = load_model_file(run / 'model.safetensors')[1]['training']
    assert {
        key: training[key]
        for key in ('label_smoothing', 'mixup', 'random_erase', 'band_jitter')
    } == {
        'label_smoothing': 0.1,
        'mixup': True,
        'random_erase': 0.5,
        'band_jitter': True,
    }


@pytest.mark.parametrize('task', TASKS)
def test_evaluate_reproduces_the_logged_validation_metric(
    task, trained, labelled, tiny, cli_run, tmp_path
):
    run = trained(task)
    name = LEARNT[task][0]
    _, metadata = load_model_file(run / 'model.safetensors')
    logged = [row for row in read_rows(run) if row[f'val_{name}']]

    report = evaluate_json(
        cli_run,
        run / 'model.safetensors',
        tmp_path / 'val.json',
        *tiny.data(labelled, task),
        '--split',
        'val',
    )

    final = metadata['training']['final']
    steps = int(tiny.runs[task][tiny.runs[task].index('--steps') + 1])
    assert int(logged[-1]['step']) == final['step'] == steps
    assert report[name] == pytest.approx(float(logged[-1][f'val_{name}']), abs=1e-5)
    assert report[name] == pytest.approx(final['value'], abs=1e-5)
    assert metadata['training']['metric'] == f'val_{name}'
    best = metadata['training']['best']
    assert best['value'] == max(float(row[f'val_{name}']) for row in logged)


def test_evaluate_twice_gives_the_same_report(
    trained, labelled, tiny, cli_run, tmp_path
):
    model = trained('detect') / 'model.safetensors'
    data = tiny.data(labelled, 'detect', test=True)

    first = evaluate_json(cli_run, model, tmp_path / 'a.json', *data)
    second = evaluate_json(cli_run, model, tmp_path / 'b.json', *data)

    assert first == second
    assert set(first['per_class']) == {'boxes'}, 'named after boxes.gpkg'
    assert first['per_class']['boxes']['support'] > 10


@pytest.mark.parametrize('task', TASKS)
def test_the_model_file_describes_itself(task, trained, labelled):
    path = trained(task) / 'model.safetensors'

    model, metadata = load_finetuned(path)

    assert not model.training
    assert metadata['kind'] == 'finetuned' and metadata['task'] == task
    names = {
        'classify': ['bright', 'dark', 'stripes'],
        'segment': ['0', '1', '2'],
        'detect': ['boxes'],
    }[task]
    assert [c['name'] for c in metadata['classes']] == names
    assert all(len(c['colour']) == 3 for c in metadata['classes'])
    sensor = metadata['sensor']
    assert sensor['bands'] == ['band_1', 'band_2', 'band_3'] and sensor['in_chans'] == 3
    assert sensor['name'] == '3band-uint8'
    assert len(sensor['statistics']['mean']) == len(sensor['statistics']['std']) == 3
    assert 40 < sensor['statistics']['mean'][0] < 200
    # Class folders are not georeferenced; scenes are, in metres.
    assert sensor['res'] == (None if task == 'classify' else [10.0, 10.0])
    size = 64 if task == 'detect' else 32
    assert metadata['tile'] == {'size': size, 'overlap': size // 4}
    assert metadata['score_threshold'] == 0.5
    assert metadata['model_config']['task'] == task
    assert metadata['model_config']['encoder']['model_args'] == {
        'depth': 2,
        'embed_dim': 32,
        'num_heads': 2,
    }
    assert metadata['class_table']['names'] == names
    assert metadata['training']['steps'] > 0 and metadata['training']['world_size'] == 1
    json.dumps(metadata, allow_nan=False)  # strict JSON
    assert PredictionSpec.from_metadata(metadata).class_names == tuple(names)
    with torch.no_grad():
        output = model(torch.zeros(1, 3, size, size))
    if task == 'classify':
        assert output.shape == (1, 3)
    elif task == 'segment':
        assert output.shape == (1, 3, size, size)
    else:
        assert set(output[0]) == {'boxes', 'labels', 'scores'}


def test_segmentation_trains_an_auxiliary_head_that_is_not_exported(trained):
    run = trained('segment')

    state, _ = load_model_file(run / 'model.safetensors')
    checkpoint = torch.load(run / 'checkpoints' / 'last.ckpt', weights_only=True)

    # The auxiliary FCN head trains (it is in the checkpoint, for resuming) ...
    aux = [k for k in checkpoint['state_dict'] if k.startswith('aux_head.')]
    assert aux and checkpoint['hyper_parameters']['aux_weight'] == 0.4
    # ... and is left out of the model file, which holds the model and no more.
    assert not any('aux' in key for key in state)
    model, _ = load_finetuned(run / 'model.safetensors')
    assert set(model.state_dict()) == set(state)
    assert not any('aux' in name for name, _ in model.named_modules())


def test_metrics_csv_rows_of_training_and_validation(trained):
    rows = read_rows(trained('classify'))

    training = [int(r['step']) for r in rows if r['loss']]
    validation = [int(r['step']) for r in rows if r['val_accuracy']]
    assert training == list(range(5, 41, 5))
    assert validation == [20, 40]
    assert all(0 <= float(r['val_accuracy']) <= 1 for r in rows if r['val_accuracy'])
    assert all(float(r['lr']) >= 0 for r in rows if r['loss'])


@pytest.mark.parametrize(
    ('task', 'head'),
    [
        ('segment', 'head: UperNet of 32 channels on a narrow-width pyramid'),
        ('detect', 'box head 2fc of width 128, 8 RoIs and 32 anchors sampled'),
    ],
)
def test_head_sizes_are_logged_and_stored(
    task, head, labelled, tiny, cli_run, tmp_path
):
    run = tmp_path / 'run'

    result = cli_run(
        'finetune', task, *tiny.data(labelled, task), '--out', run, *tiny.vit,
        *tiny.heads[task], '--image-size', 32, '--steps', 1, '--batch-size', 4,
        '--split', 'none',
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stderr.count('head: ') == 1  # at normal verbosity, once
    assert head in result.stderr
    _, metadata = load_model_file(run / 'model.safetensors')
    options = metadata['model_config']['options']
    if task == 'segment':
        assert options['channels'] == 32
    else:
        assert options['out_channels'] == 32 and options['box_head'] == '2fc'
        assert options['detector_args']['box_batch_size_per_image'] == 8
        assert options['detector_args']['rpn_pre_nms_top_n_test'] == 300


@pytest.mark.parametrize('task', ['segment', 'detect'])
def test_scene_cells_are_held_in_memory_unless_told_not_to(
    task, labelled, tiny, cli_run, tmp_path
):
    options = [
        *tiny.data(labelled, task), *tiny.vit, *tiny.heads[task], '--image-size', 32,
        '--steps', 2, '--batch-size', 4,
    ]  # fmt: skip

    held = cli_run('finetune', task, *options, '--out', tmp_path / 'a', verbose=True)
    on_file = cli_run(
        'finetune', task, *options, '--out', tmp_path / 'b', '--chip-memory', 0,
        verbose=True,
    )  # fmt: skip

    assert held.exit_code == 0, held.output
    assert on_file.exit_code == 0, on_file.output
    assert held.stderr.count('scene cells read once and held in memory') == 1
    assert 'training cells' in held.stderr and 'validation cells' in held.stderr
    assert 'held in memory' not in on_file.stderr


def test_resume_continues_a_finished_run_to_more_steps(
    labelled, tiny, cli_run, user_error, tmp_path
):
    run = tmp_path / 'run'
    args = [
        'finetune', 'classify', *tiny.data(labelled, 'classify'), '--out', run,
        *tiny.vit, '--image-size', 32, '--batch-size', 16, '--lr', '3e-3',
        '--val-every', 4, '--checkpoint-every', 4, '--log-every', 1,
    ]  # fmt: skip
    assert cli_run(*args, '--steps', 6).exit_code == 0
    first = (run / 'model.safetensors').read_bytes()
    last = torch.load(run / 'checkpoints' / 'last.ckpt', weights_only=True)
    assert last['global_step'] == 6  # not 4, the last periodic checkpoint

    user_error(cli_run(*args, '--steps', 6), 'holds a finished run', '--resume')
    result = cli_run(*args, '--steps', 10, '--resume', verbose=True)

    assert result.exit_code == 0, result.output
    assert 'resuming from' in result.stderr
    assert (run / 'model.safetensors').read_bytes() != first
    _, metadata = load_model_file(run / 'model.safetensors')
    assert metadata['training']['steps'] == 10
    rows = read_rows(run)
    assert [int(r['step']) for r in rows if r['loss']] == list(range(1, 11))
    assert [int(r['step']) for r in rows if r['val_accuracy']] == [4, 6, 8, 10]
    last = torch.load(run / 'checkpoints' / 'last.ckpt', weights_only=True)
    assert last['global_step'] == 10
    assert yaml.safe_load((run / 'config.yaml').read_text())['steps'] == 10


@pytest.mark.parametrize('old', [False, True], ids=['with-aux-head', 'saved-before-it'])
def test_segmentation_resumes_with_its_auxiliary_head_or_without(
    old, labelled, tiny, cli_run, tmp_path
):
    run = tmp_path / 'run'
    args = [
        'finetune', 'segment', *tiny.data(labelled, 'segment'), '--out', run,
        *tiny.vit, '--image-size', 32, '--batch-size', 8, '--lr', '3e-3',
        '--checkpoint-every', 2, '--split', 'none',
    ]  # fmt: skip
    assert cli_run(*args, '--steps', 2).exit_code == 0
    path = run / 'checkpoints' / 'last.ckpt'
    first = torch.load(path, weights_only=True)
    if old:  # as a run saved before the auxiliary head: no weights, groups, weight
        state = first['state_dict']
        for key in [k for k in state if k.startswith('aux_head.')]:
            del state[key]
        del first['hyper_parameters']['aux_weight']
        optimizer = first['optimizer_states'][0]
        aux_groups = optimizer['param_groups'][-2:]
        optimizer['param_groups'] = optimizer['param_groups'][:-2]
        for index in (i for group in aux_groups for i in group['params']):
            optimizer['state'].pop(index, None)
        groups = len(optimizer['param_groups']) + 2
        scheduler = first['lr_schedulers'][0]
        for key, value in scheduler.items():
            if isinstance(value, list) and len(value) == groups:
                scheduler[key] = value[:-2]
        torch.save(first, path)

    result = cli_run(*args, '--steps', 4, '--resume')

    assert result.exit_code == 0, result.output
    last = torch.load(path, weights_only=True)
    assert last['global_step'] == 4
    aux = [k for k in last['state_dict'] if k.startswith('aux_head.')]
    if old:
        assert aux == [] and last['hyper_parameters']['aux_weight'] == 0.0
    else:
        assert aux and last['hyper_parameters']['aux_weight'] == 0.4
        key = 'aux_head.classifier.weight'
        assert not torch.equal(last['state_dict'][key], first['state_dict'][key])


def test_starts_from_a_pretrained_file_and_takes_its_model(
    labelled, tiny, cli_run, tmp_path
):
    pretrained = tmp_path / 'pre'
    result = cli_run(
        'pretrain', labelled.shapes / 'images', '--out', pretrained,
        '--model', 'vit_tiny_patch16_224', '--model-arg', 'depth=2',
        '--model-arg', 'embed_dim=32', '--model-arg', 'num_heads=2',
        '--decoder-depth', 1, '--decoder-dim', 16, '--decoder-heads', 2,
        '--image-size', 32, '--patch-size', 8, '--batch-size', 8, '--lr', '1e-3',
        '--steps', 3, '--num-workers', 0, '--accelerator', 'cpu',
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    source, pre = load_model_file(pretrained / 'pretrained.safetensors')
    # Statistics that the labelled data cannot give, to see which ones are used.
    group = next(iter(pre['sensors']))
    stored = pre['sensors'][group]['statistics']
    stored['mean'] = [123.0] * len(stored['mean'])
    save_model_file(pretrained / 'pretrained.safetensors', source, pre)
    run = tmp_path / 'run'

    # No model options: the pre-trained file's model, patch and image size. One
    # step at a negligible rate leaves the weights where they started.
    options = (
        *tiny.data(labelled, 'segment'), '--init', pretrained / 'pretrained.safetensors',
        '--head-arg', 'channels=16', '--steps', 1, '--lr', '1e-12', '--batch-size', 4,
        '--num-workers', 0, '--accelerator', 'cpu',
    )  # fmt: skip
    result = cli_run('finetune', 'segment', '--out', run, *options)

    assert result.exit_code == 0, result.output
    # The load report is one block at normal verbosity (no -v).
    report = result.stderr.split('initial weights from', 1)[1]
    assert f'{group}: patch embedding: 3 bands copied in order' in report
    assert 'decoder weights not used: the encoder only is loaded' in report
    state, metadata = load_model_file(run / 'model.safetensors')
    for key in ('name', 'model_args', 'patch_size', 'image_size'):
        assert metadata['model'][key] == pre['model'][key], key
    assert metadata['training']['init'] == str(pretrained / 'pretrained.safetensors')
    group = next(iter(pre['sensors']))
    assert group == metadata['sensor']['name'] == '3band-uint8'
    pairs = {
        'encoder.patch_embed.proj.weight': f'patch_embed.{group}.proj.weight',
        'encoder.cls_token': 'encoder.cls_token',
        'encoder.blocks.0.attn.qkv.weight': 'encoder.blocks.0.attn.qkv.weight',
        'encoder.blocks.1.mlp.fc2.weight': 'encoder.blocks.1.mlp.fc2.weight',
        'encoder.norm.weight': 'encoder.norm.weight',
    }
    for key, pretrained_key in pairs.items():
        assert torch.allclose(state[key], source[pretrained_key], atol=1e-6), key
    # Normalised as in pre-training: the init file's statistics travel on.
    assert metadata['sensor']['statistics'] == stored

    result = cli_run(
        'finetune', 'segment', '--out', tmp_path / 'own', *options, '--recompute-stats'
    )
    assert result.exit_code == 0, result.output
    _, metadata = load_model_file(tmp_path / 'own' / 'model.safetensors')
    recomputed = metadata['sensor']['statistics']
    assert recomputed['bands'] == stored['bands']
    assert all(m != 123.0 for m in recomputed['mean'])


# The real samples in ../shared/data: short runs that must finish and report.


@pytest.fixture
def spacenet(shared_data) -> list[object]:
    folder = shared_data / 'labelled' / 'buildings'
    return [
        '--images', folder / 'spacenet_pan.tif',
        '--labels', folder / 'spacenet_buildings.geojson',
    ]  # fmt: skip


def check_real_run(cli_run, run: Path, data: list[object], tmp_path: Path) -> dict:
    """The model file is complete and evaluate reports metrics in [0, 1]."""
    _, metadata = load_finetuned(run / 'model.safetensors')
    assert metadata['kind'] == 'finetuned'
    PredictionSpec.from_metadata(metadata)
    report = evaluate_json(
        cli_run,
        run / 'model.safetensors',
        tmp_path / 'eval.json',
        *data,
        '--split',
        'val',
    )
    scalars = [
        v for k, v in report.items() if k in ('accuracy', 'miou', 'map_50', 'map')
    ]
    assert scalars and all(0 <= v <= 1 for v in scalars), report
    return metadata


def test_spacenet_buildings_as_segmentation(spacenet, tiny, cli_run, tmp_path):
    run = tmp_path / 'run'

    result = cli_run(
        'finetune', 'segment', *spacenet, '--out', run, *tiny.vit,
        '--head-arg', 'channels=16', '--image-size', 64, '--steps', 2,
        '--batch-size', 4,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    metadata = check_real_run(cli_run, run, spacenet, tmp_path)
    assert [c['name'] for c in metadata['classes']] == [
        'background',
        'spacenet_buildings',
    ]
    assert metadata['sensor']['res'] == [0.5, 0.5]
    assert metadata['sensor']['nodata'] == 0


def test_spacenet_buildings_as_detection(spacenet, tiny, cli_run, tmp_path):
    run = tmp_path / 'run'

    result = cli_run(
        'finetune', 'detect', *spacenet, '--out', run, *tiny.vit,
        *tiny.heads['detect'], '--image-size', 128, '--steps', 2, '--batch-size', 2,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    metadata = check_real_run(cli_run, run, spacenet, tmp_path)
    assert [c['name'] for c in metadata['classes']] == ['spacenet_buildings']


def test_naip_patches_classification(shared_data, tiny, cli_run, tmp_path):
    archive = shared_data / 'labelled' / 'classification' / 'naip_patches_6class.zip'
    run = tmp_path / 'run'

    result = cli_run(
        'finetune', 'classify', '--images', archive, '--out', run, *tiny.vit,
        '--image-size', 32, '--steps', 2, '--batch-size', 16,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    metadata = check_real_run(cli_run, run, ['--images', archive], tmp_path)
    assert len(metadata['classes']) == 6 and metadata['sensor']['in_chans'] == 4
    png = tmp_path / 'eval_confusion.png'
    assert png.stat().st_size > 0


# Two processes on the CPU (DDP over gloo), through the console script.


@pytest.mark.slow
def test_ddp_run_on_two_processes(labelled, tiny, subprocess_env, tmp_path):
    exe = Path(sys.executable).parent / 'dspt-geo'
    run = tmp_path / 'run'
    done = subprocess.run(
        [
            exe, 'finetune', 'classify', *map(str, tiny.data(labelled, 'classify')),
            '--out', str(run), *map(str, tiny.vit), '--image-size', '32',
            '--steps', '6', '--batch-size', '8', '--lr', '3e-3', '--val-every', '3',
            '--devices', '2', '--strategy', 'ddp',
        ],
        check=False, capture_output=True, text=True, env=subprocess_env, timeout=300,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-5000:]
    _, metadata = load_model_file(run / 'model.safetensors')
    assert metadata['training']['world_size'] == 2
    assert metadata['training']['steps'] == 6
    rows = read_rows(run)
    assert [int(r['step']) for r in rows if r['val_accuracy']] == [3, 6]
    assert list(tmp_path.rglob('*.safetensors')) == [run / 'model.safetensors']


# Bad input: one message, exit code 1, no traceback, nothing written.


def _crs_less_labels(tmp_path, labelled, writers):
    import geopandas as gpd
    import shapely

    path = tmp_path / 'nocrs.shp'
    gpd.GeoDataFrame(
        {'kind': ['square']},
        geometry=[shapely.box(500_000, 4_999_800, 500_100, 4_999_900)],
    ).to_file(path)
    images = labelled.squares / 'images'
    return ['detect', '--images', images, '--labels', path], ['has no CRS']


def _labels_outside(tmp_path, labelled, writers):
    import numpy as np

    far = writers.tif(
        tmp_path / 'far.tif', np.ones((16, 16), np.uint8), (900_000.0, 5e6)
    )
    images = labelled.shapes / 'images'
    return ['segment', '--images', images, '--labels', far], ['lie outside every image']


def _missing_class_column(tmp_path, labelled, writers):
    root = labelled.squares
    return [
        'detect', '--images', root / 'images', '--labels', root / 'boxes.gpkg',
        '--class-column', 'colour',
    ], ["class column 'colour' is not in"]  # fmt: skip


def _empty_class(tmp_path, labelled, writers):
    chips = writers.chips(tmp_path / 'chips', {'train': 2, 'val': 1}, seed=1)
    (chips / 'val' / 'grass').mkdir()
    return ['classify', '--images', chips], ['holds no chip']


def _mask_value_outside_the_table(tmp_path, labelled, writers):
    table = tmp_path / 'classes.json'
    table.write_text(json.dumps({'names': ['ground', 'square'], 'values': [0, 1]}))
    root = labelled.shapes
    return [
        'segment', '--images', root / 'images', '--labels', root / 'labels',
        '--class-table', table,
    ], ['not in the class table']  # fmt: skip


def _init_from_a_finetuned_model(tmp_path, labelled, writers, trained):
    model = trained('classify') / 'model.safetensors'
    return [
        'classify', '--images', labelled.chips, '--init', model,
    ], ['is a fine-tuned model']  # fmt: skip


def _image_size_off_the_patch_grid(tmp_path, labelled, writers):
    return [
        'classify', '--images', labelled.chips, '--image-size', 30,
    ], ['image size 30 does not fit patch size 8', '--image-size 32']  # fmt: skip


BAD_INPUT = [
    _crs_less_labels,
    _labels_outside,
    _missing_class_column,
    _empty_class,
    _mask_value_outside_the_table,
    _init_from_a_finetuned_model,
    _image_size_off_the_patch_grid,
]


@pytest.mark.filterwarnings('ignore::UserWarning')
@pytest.mark.parametrize('case', BAD_INPUT, ids=lambda case: case.__name__.strip('_'))
def test_bad_input_is_one_message_and_writes_nothing(
    case, labelled, writers, trained, tiny, cli_run, user_error, tmp_path
):
    arguments = (tmp_path, labelled, writers)
    if 'trained' in case.__code__.co_varnames:
        arguments += (trained,)
    options, fragments = case(*arguments)
    run = tmp_path / 'run'

    result = cli_run('finetune', *options, '--out', run, *tiny.vit, '--steps', 1)

    user_error(result, *fragments)
    assert not run.exists()
