"""The plugin's command runner, without QGIS: progress, errors, cancel."""

import sys
import textwrap
import time
from pathlib import Path

import pytest

from dspt_geo.qgis import PLUGIN_SOURCE

sys.path.insert(0, str(PLUGIN_SOURCE))
from runner import Cancelled, find_executable, run_cli


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / 'fake-dspt-geo'
    path.write_text(f'#!{sys.executable}\n' + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def test_progress_log_stdout_and_errors(tmp_path):
    fake = _script(
        tmp_path,
        """
        import sys
        print('WARNING: skipping 2 files', file=sys.stderr)
        for i in (0, 50, 100):
            sys.stderr.write(f'\\rscene.tif: {i:3d}%|####| {i}/100 [00:01]')
            sys.stderr.flush()
        sys.stderr.write('\\n')  # tqdm ends its line when it closes
        print('/out/mask.tif')
        print('Error: the scene has 3 bands, the model takes 4 (--bands)', file=sys.stderr)
        sys.exit(1)
        """,
    )
    progress, log = [], []
    result = run_cli(fake, [], on_progress=progress.append, on_log=log.append)
    assert progress == [0, 50, 100]
    assert log == ['WARNING: skipping 2 files']
    assert result.stdout == '/out/mask.tif\n'
    assert result.returncode == 1
    assert result.message == 'Error: the scene has 3 bands, the model takes 4 (--bands)'


def test_cancel_interrupts_the_run_which_cleans_up(tmp_path):
    marker = tmp_path / 'partial.tmp'
    fake = _script(
        tmp_path,
        f"""
        import pathlib, sys, time
        partial = pathlib.Path({str(marker)!r})
        partial.write_text('half')
        try:
            sys.stderr.write('\\r 10%|#|'); sys.stderr.flush()
            time.sleep(60)
        except KeyboardInterrupt:
            partial.unlink()
            raise
        """,
    )
    started = time.monotonic()
    with pytest.raises(Cancelled, match='cancelled'):
        run_cli(fake, [], is_cancelled=lambda: time.monotonic() - started > 1)
    assert time.monotonic() - started < 30
    assert not marker.exists(), 'the interrupted run removed its partial output'


def test_find_executable_prefers_the_setting(tmp_path, monkeypatch):
    fake = _script(tmp_path, 'print(1)\n')
    monkeypatch.delenv('DSPT_GEO_EXECUTABLE', raising=False)
    assert find_executable(fake) == fake
    monkeypatch.setenv('DSPT_GEO_EXECUTABLE', fake)
    assert find_executable('') == fake
    monkeypatch.setenv('DSPT_GEO_EXECUTABLE', str(tmp_path / 'missing'))
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    monkeypatch.setattr(
        'dspt_geo.qgis.dspt_geo_processing.runner.ENVIRONMENT_FILE',
        tmp_path / 'none.json',
    )
    with pytest.raises(FileNotFoundError, match='qgis-plugin install'):
        find_executable('')
