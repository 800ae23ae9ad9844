"""dspt-geo probe: trained vs random encoders, caching, baseline, JSON and plot."""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from dspt_geo_cli.main import cli

import dspt_geo.probe.features as features_module
from dspt_geo.errors import ConfigError
from dspt_geo.probe import format_table, probe


def _summary(report: dict, encoder: str, head: str, fraction: float) -> dict:
    (row,) = [
        r
        for r in report['summary']
        if r['encoder'] == encoder and r['head'] == head and r['fraction'] == fraction
    ]
    return row


def test_trained_encoder_beats_random(
    planted: Path, trained_encoder: Path, tmp_path: Path
) -> None:
    report = probe(
        [trained_encoder], [planted], out=tmp_path, fractions=(0.1, 1.0), seeds=(0, 1)
    )
    names = [e['name'] for e in report['encoders']]
    assert names == [str(trained_encoder), 'random']
    assert report['splits'] == {'train': 72, 'val': 24, 'test': 24}
    table = format_table(report)
    for fraction in (0.1, 1.0):
        # The planted signal is one band's small offset under loud nuisance: random
        # features hide it from a nearest-neighbour vote; trained ones show it.
        trained = _summary(report, str(trained_encoder), 'knn', fraction)
        random = _summary(report, 'random', 'knn', fraction)
        assert trained['mean'] > random['mean'] + 0.1, table
        # A linear classifier finds some of the signal in random features too.
        trained = _summary(report, str(trained_encoder), 'logistic', fraction)
        random = _summary(report, 'random', 'logistic', fraction)
        assert trained['mean'] >= random['mean'], table
    assert _summary(report, str(trained_encoder), 'logistic', 1.0)['mean'] > 0.85
    assert _summary(report, str(trained_encoder), 'knn', 1.0)['n'] == 2
    # 10 % of 72 training chips, stratified over 3 classes, at least one each.
    few = [r for r in report['results'] if r['fraction'] == 0.1]
    counts = report['train_class_counts']
    assert sum(counts) == 72 and len(counts) == 3
    assert {r['train_labels'] for r in few} == {sum(round(n / 10) for n in counts)}
    assert 'random' in table and '0.1 labels' in table and '±' in table


def test_features_are_cached(
    planted: Path,
    trained_encoder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    extract = features_module.extract_features

    def counting(*args, **kwargs):
        calls.append(kwargs.get('description'))
        return extract(*args, **kwargs)

    monkeypatch.setattr(features_module, 'extract_features', counting)
    first = probe(
        [trained_encoder], [planted], out=tmp_path, fractions=(1.0,), seeds=(0,)
    )
    assert len(calls) == 6  # 2 encoders x train/val/test
    assert len(list((tmp_path / 'features').glob('features-*.npz'))) == 2
    again = probe(
        [trained_encoder], [planted], out=tmp_path, fractions=(0.5,), seeds=(3,)
    )
    assert len(calls) == 6
    assert again['splits'] == first['splits']
    # A changed chip is new data: its features are extracted again.
    chip = next(planted.rglob('*.tif'))
    stat = chip.stat()
    os.utime(chip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    probe(
        [trained_encoder],
        [planted],
        out=tmp_path,
        fractions=(1.0,),
        seeds=(0,),
        baseline=False,
    )
    assert len(calls) == 9


def test_baseline_options(planted: Path, trained_encoder: Path, tmp_path: Path) -> None:
    report = probe(
        [trained_encoder], [planted], out=tmp_path, fractions=(1.0,), seeds=(0,),
        baseline=False, heads=('knn',),
    )  # fmt: skip
    assert [e['name'] for e in report['encoders']] == [str(trained_encoder)]
    assert {r['head'] for r in report['results']} == {'knn'}
    with pytest.raises(ConfigError, match='encoder file'):
        probe(['random'], [planted], out=tmp_path)


def test_random_baseline_is_deterministic(
    planted: Path, trained_encoder: Path, tmp_path: Path
) -> None:
    runs = [
        probe(
            [trained_encoder, 'random'],
            [planted],
            out=tmp_path / str(i),
            fractions=(1.0,),
            seeds=(0,),
            heads=('knn',),
        )
        for i in range(2)
    ]
    fingerprints = [[e['fingerprint'] for e in r['encoders']] for r in runs]
    assert fingerprints[0] == fingerprints[1]
    assert fingerprints[0][0] != fingerprints[0][1]
    assert runs[0]['results'] == runs[1]['results']


def test_cli_json_and_plot(
    planted: Path, trained_encoder: Path, tmp_path: Path
) -> None:
    out = tmp_path / 'probe'
    args = [
        'probe', str(trained_encoder), '--images', str(planted), '--out', str(out),
        '--label-fraction', '0.1', '1.0', '--seeds', '0', '1', '--split', 'random',
    ]  # fmt: skip
    result = CliRunner().invoke(cli, [*args, '--json'])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report['fractions'] == [0.1, 1.0] and report['seeds'] == [0, 1]
    assert (
        len(report['results']) == 2 * 2 * 2 * 2
    )  # encoders x heads x fractions x seeds
    assert json.loads((out / 'probe.json').read_text())['summary'] == report['summary']
    png = (out / 'probe.png').read_bytes()
    assert png.startswith(b'\x89PNG') and len(png) > 5000
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].startswith('test accuracy')


def test_cli_bad_input(planted: Path, tmp_path: Path) -> None:
    bad = tmp_path / 'not_a_model.safetensors'
    bad.write_text('nothing')
    result = CliRunner().invoke(
        cli, ['probe', str(bad), '--images', str(planted), '--out', str(tmp_path / 'o')]
    )
    assert result.exit_code == 1
    assert 'not an encoder a probe reads' in result.output
    result = CliRunner().invoke(
        cli,
        [
            'probe',
            str(bad),
            '--images',
            str(planted),
            '--out',
            str(tmp_path),
            '--split',
            'none',
        ],
    )
    assert result.exit_code == 2 and '--split' in result.output
