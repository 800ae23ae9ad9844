"""``dspt-geo finetune --label-fraction``: a few-label run trains on a share per class."""

from collections import Counter
from pathlib import Path

import yaml

from dspt_geo.models import load_model_file


def test_finetune_classify_on_a_tenth_of_the_labels(tiny, writers, cli_run, tmp_path):
    # Flat class folders (no split folders, no CRS): a stratified random split.
    chips = writers.chips(tmp_path / 'chips', {'': 10}, seed=0)
    run = tmp_path / 'run'

    result = cli_run(
        'finetune', 'classify', '--images', chips, '--out', run, *tiny.vit,
        '--image-size', '32', '--steps', '2', '--batch-size', '4',
        '--split', 'random', '--label-fraction', '0.25', '--label-seed', '3',
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    train = [
        line.split('\t') for line in (run / 'splits/train.txt').read_text().splitlines()
    ]
    val = [
        line.split('\t') for line in (run / 'splits/val.txt').read_text().splitlines()
    ]
    # 8 training chips per class after the split, a quarter kept; validation whole.
    assert Counter(label for _, label in train) == {
        'bright': 2,
        'dark': 2,
        'stripes': 2,
    }
    assert Counter(label for _, label in val) == {'bright': 2, 'dark': 2, 'stripes': 2}
    assert all(Path(path).parent.name == label for path, label in train + val)
    assert not {path for path, _ in train} & {path for path, _ in val}
    (line,) = [line for line in result.stderr.splitlines() if 'label fraction' in line]
    assert line.startswith('INFO: label fraction 0.25 (seed 3): training keeps 6 of 24')
    assert 'bright 2/8, dark 2/8, stripes 2/8' in line
    config = yaml.safe_load((run / 'config.yaml').read_text())
    assert (config['label_fraction'], config['label_seed']) == (0.25, 3)
    _, metadata = load_model_file(run / 'model.safetensors')
    assert metadata['training']['label_fraction'] == 0.25

    # Another label seed draws other chips, and --overwrite replaces the lists.
    again = cli_run(
        'finetune', 'classify', '--images', chips, '--out', run, *tiny.vit,
        '--image-size', '32', '--steps', '1', '--batch-size', '4', '--overwrite',
        '--split', 'random', '--label-fraction', '0.25', '--label-seed', '4',
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    redrawn = [
        line.split('\t')[0]
        for line in (run / 'splits/train.txt').read_text().splitlines()
    ]
    assert len(redrawn) == 6 and set(redrawn) != {path for path, _ in train}


def test_a_label_fraction_outside_0_1_is_a_usage_error(
    tiny, writers, cli_run, tmp_path
):
    chips = writers.chips(tmp_path / 'chips', {'': 2}, seed=0)

    result = cli_run(
        'finetune', 'classify', '--images', chips, '--out', tmp_path / 'run',
        *tiny.vit, '--label-fraction', '1.5',
    )  # fmt: skip

    assert result.exit_code == 2
    assert '--label-fraction' in result.output
