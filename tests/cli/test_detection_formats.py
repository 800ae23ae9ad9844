"""``finetune detect`` and ``evaluate`` read NWPU VHR-10, HRSC2016 and DOTA directly."""

import json

import pytest

from dspt_geo.models import load_finetuned


@pytest.mark.parametrize('kind', ['nwpu', 'hrsc', 'dota'])
def test_finetune_then_evaluate_on_the_data_sets_own_files(
    kind, detection_sets, tiny, cli_run, tmp_path
):
    written = detection_sets(kind, tmp_path / 'data')
    data = ['--images', written.images]
    for labels in written.labels:
        data += ['--labels', labels]
    run = tmp_path / 'run'

    result = cli_run(
        'finetune', 'detect', *data, '--out', run, *tiny.vit, *tiny.heads['detect'],
        '--image-size', 64, '--steps', 2, '--batch-size', 2,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    _, metadata = load_finetuned(run / 'model.safetensors')
    names = [c['name'] for c in metadata['classes']]
    assert names == {
        'nwpu': ['airplane', 'ship', 'storage tank', 'baseball diamond', 'tennis court',
                 'basketball court', 'ground track field', 'harbor', 'bridge', 'vehicle'],
        'hrsc': ['100000002', '100000003'],
        'dota': ['plane', 'small-vehicle'],
    }[kind]  # fmt: skip
    report_path = tmp_path / 'eval.json'
    result = cli_run(
        'evaluate', run / 'model.safetensors', *data, '--json', report_path
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert 0 <= report['map_50'] <= 1
    support = sum(c['support'] for c in report['per_class'].values())
    objects = [o for items in written.objects.values() for o in items]
    assert support == sum(not difficult for _, _, difficult in objects), (
        'difficult objects are not counted as ground truth'
    )
