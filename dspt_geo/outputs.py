"""Output paths, checked before any work starts.

Every command checks where it will write (a run folder, a report, a mask, a
project) with :func:`check_output_path` before it reads any data, so that a typo
or a read-only place costs seconds, not a run, and leaves nothing behind: the
check creates nothing. Missing folders are created when the output is written.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputPathError

__all__ = ('atomic_write', 'check_output_path')


def check_output_path(
    path: str | os.PathLike[str], option: str, *, folder: bool = False
) -> Path:
    """Raise unless *path* can be written, as a file or (with *folder*) a folder.

    The path's nearest existing ancestor must be a folder this process may write
    in; the folders below it are created later, by the writer.

    Args:
        path: the output path as the user gave it.
        option: the command-line option (or argument) that named it, for the message.
        folder: the output is a folder (a run folder), not a file.

    Returns:
        *path* as a :class:`~pathlib.Path`.

    Raises:
        OutputPathError: If the path is a folder where a file is wanted (or a file
            where a folder is wanted), or lies below a file, or in a folder that
            cannot be written.

    .. versionadded:: 0.1
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        msg = f'{option} {path} is a file; give a folder'
        raise OutputPathError(msg)
    if not folder and path.is_dir():
        msg = f'{option} {path} is a folder; give a file name'
        raise OutputPathError(msg)
    start = path if folder else path.parent
    existing = next(p for p in (start, *start.parents) if p.exists() or p == Path())
    if not existing.is_dir():
        msg = f'{option} {path} cannot be created: {existing} is a file, not a folder'
        raise OutputPathError(msg)
    if not os.access(existing, os.W_OK | os.X_OK):
        msg = f'{option} {path} cannot be written: no permission to write in {existing}'
        raise OutputPathError(msg)
    return path


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary sibling of *path* to write, renamed over *path* at the end.

    The block writes the temporary file (same extension, so writers that infer the
    format from it still do); when the block ends without an error the file
    replaces *path* in one rename, so *path* is whole or absent. On an error the
    temporary file is removed and *path* is left as it was.

    Args:
        path: the final file.

    Yields:
        the temporary path to write.

    .. versionadded:: 0.2
    """
    path = Path(path)
    tmp = path.with_name(f'.{path.stem}.tmp{os.getpid()}{path.suffix}')
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
