"""A real chip folder from end to end: pretrain, finetune classify, evaluate (issue 11).

20 EuroSAT RGB JPEGs per class, linked into a temporary folder of class folders.
"""

import json

import pytest

from dspt_geo.models import load_model_file

CHIPS_PER_CLASS = 20


@pytest.fixture
def eurosat_subset(shared_data, tmp_path):
    """Class folders holding links to the first 20 chips of each EuroSAT class."""
    source = shared_data / 'labelled' / 'classification' / 'eurosat_rgb'
    if not source.is_dir():
        pytest.skip('eurosat_rgb not in the sample data')
    root = tmp_path / 'eurosat'
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())
    for name in classes:
        (root / name).mkdir(parents=True)
        for chip in sorted((source / name).glob('*.jpg'))[:CHIPS_PER_CLASS]:
            (root / name / chip.name).symlink_to(chip)
    return root, classes


def test_pretrain_finetune_and_evaluate_a_real_chip_folder(
    eurosat_subset, tiny, cli_run, tmp_path
):
    root, classes = eurosat_subset
    pre, run, report = tmp_path / 'pre', tmp_path / 'run', tmp_path / 'eval.json'

    result = cli_run(
        'pretrain', root, '--out', pre, *tiny.vit, '--image-size', 64,
        '--steps', 3, '--batch-size', 8, '--decoder-depth', 1,
        '--decoder-dim', 32, '--decoder-heads', 2,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    _, pretrained = load_model_file(pre / 'pretrained.safetensors')
    assert list(pretrained['sensors']) == ['3band-uint8']

    result = cli_run(
        'finetune', 'classify', '--images', root, '--init',
        pre / 'pretrained.safetensors', '--out', run, '--image-size', 64,
        '--steps', 4, '--batch-size', 8, '--num-workers', '0',
        '--accelerator', 'cpu',
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    _, finetuned = load_model_file(run / 'model.safetensors')
    assert [c['name'] for c in finetuned['classes']] == classes
    # The statistics hand-off: the pre-training statistics, not recomputed ones.
    sensor = finetuned['sensor']
    assert sensor['name'] == '3band-uint8'
    assert sensor['statistics'] == pretrained['sensors']['3band-uint8']['statistics']

    result = cli_run(
        'evaluate', run / 'model.safetensors', '--images', root, '--split', 'val',
        '--json', report,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads(report.read_text())
    assert scores['classes'] == classes
    assert 0 < scores['samples'] < len(classes) * CHIPS_PER_CLASS
    assert sum(map(sum, scores['confusion_matrix'])) == scores['samples']
    assert 0 <= scores['accuracy'] <= 1
