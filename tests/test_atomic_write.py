"""atomic_write: a file is replaced whole or left as it was, and no temporary file stays."""

from pathlib import Path

import pytest

from dspt_geo.outputs import atomic_write


def test_the_file_appears_whole_with_its_extension_kept_while_written(
    tmp_path: Path,
) -> None:
    target = tmp_path / 'report.json'
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == '.json'
        tmp.write_text('{"new": 1}')
        assert not target.exists()
    assert target.read_text() == '{"new": 1}'
    assert sorted(tmp_path.iterdir()) == [target]


def test_an_error_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / 'plot.png'
    target.write_bytes(b'old')
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_bytes(b'half')
        raise RuntimeError('killed mid-write')
    assert target.read_bytes() == b'old'
    assert sorted(tmp_path.iterdir()) == [target]
