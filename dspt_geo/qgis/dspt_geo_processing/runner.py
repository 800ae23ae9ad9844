"""Run the dspt-geo command line from QGIS: progress, log lines, cancel, errors.

Standard library only: this module runs inside QGIS's own Python, which has
neither torch nor dspt-geo. The work happens in a subprocess of the Python
environment where dspt-geo is installed, so QGIS's Python stays untouched.
"""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ('Cancelled', 'CliResult', 'find_executable', 'run_cli')

#: File beside this module, written by ``dspt-geo qgis-plugin install``:
#: ``{"executable": "/path/to/venv/bin/dspt-geo"}``.
ENVIRONMENT_FILE = Path(__file__).with_name('environment.json')

#: Environment variable naming the dspt-geo executable (overrides the file).
EXECUTABLE_VARIABLE = 'DSPT_GEO_EXECUTABLE'

#: A tqdm progress update: ``desc:  42%|####      | 21/50 [...]``.
_PERCENT = re.compile(r'(\d{1,3})%\|')

#: Variables of QGIS's Python that must not leak into the dspt-geo environment.
_PYTHON_VARIABLES = ('PYTHONPATH', 'PYTHONHOME', 'PYTHONSTARTUP')


class Cancelled(Exception):
    """The user cancelled; the subprocess was stopped and left no output."""


class CliResult:
    """What a finished dspt-geo run printed.

    Attributes:
        returncode: the exit status.
        stdout: everything printed on stdout (data: paths, JSON).
        errors: the ``Error: ...`` lines of stderr, verbatim.
        log: the other stderr lines (warnings, info).
    """

    def __init__(
        self, returncode: int, stdout: str, errors: list[str], log: list[str]
    ) -> None:
        """Keep what the run printed."""
        self.returncode = returncode
        self.stdout = stdout
        self.errors = errors
        self.log = log

    @property
    def message(self) -> str:
        """The run's error message, as dspt-geo printed it."""
        if self.errors:
            return '\n'.join(self.errors)
        tail = '\n'.join(self.log[-5:])
        return f'dspt-geo exited with status {self.returncode}' + (
            f':\n{tail}' if tail else ''
        )


def find_executable(configured: str | None = None) -> str:
    """The dspt-geo executable: the setting, the variable, the file, then PATH.

    Args:
        configured: the path set in QGIS's Processing options (may be empty).

    Returns:
        the path of an existing executable.

    Raises:
        FileNotFoundError: with what to do, when none is found.
    """
    candidates = [configured or '', os.environ.get(EXECUTABLE_VARIABLE, '')]
    if ENVIRONMENT_FILE.is_file():
        candidates.append(
            json.loads(ENVIRONMENT_FILE.read_text()).get('executable', '')
        )
    candidates.append(shutil.which('dspt-geo') or '')
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    msg = (
        'dspt-geo was not found: run `dspt-geo qgis-plugin install` in the Python '
        'environment where dspt-geo is installed, or set its path in Settings > '
        'Options > Processing > Providers > dspt-geo'
    )
    raise FileNotFoundError(msg)


def run_cli(
    executable: str,
    args: Sequence[str],
    *,
    on_progress: Callable[[float], None] = lambda percent: None,
    on_log: Callable[[str], None] = lambda line: None,
    is_cancelled: Callable[[], bool] = lambda: False,
    poll: float = 0.1,
    grace: float = 15.0,
) -> CliResult:
    """Run ``dspt-geo ARGS`` and stream its stderr as progress and log lines.

    Args:
        executable: the dspt-geo executable.
        args: its arguments.
        on_progress: called with 0-100 for every tqdm update.
        on_log: called with every other stderr line.
        is_cancelled: polled every *poll* seconds; when true, the run is
            interrupted (SIGINT: dspt-geo removes its temporary outputs), then
            killed after *grace* seconds.
        poll: seconds between cancel checks.
        grace: seconds an interrupted run gets to clean up.

    Returns:
        the finished run.

    Raises:
        Cancelled: If *is_cancelled* turned true.
    """
    env = {k: v for k, v in os.environ.items() if k not in _PYTHON_VARIABLES}
    env['PYTHONUNBUFFERED'] = '1'
    process = subprocess.Popen(
        [executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        # Its own process group: Ctrl-C goes to it alone (Windows: a new group).
        start_new_session=os.name != 'nt',
        creationflags=getattr(subprocess, 'CREATE_NEW_PROCESS_GROUP', 0),
    )
    errors: list[str] = []
    log: list[str] = []
    stdout_chunks: list[bytes] = []
    # Reader threads only queue what they read: the callbacks run in the caller's
    # thread (QGIS's feedback object belongs to the algorithm's thread).
    events: queue.Queue[tuple[str, str]] = queue.Queue()

    def read_stderr() -> None:
        assert process.stderr is not None
        pending = ''
        while chunk := process.stderr.read1(4096):  # type: ignore[attr-defined]
            pending += chunk.decode('utf-8', 'replace')
            *pieces, pending = re.split(r'[\r\n]', pending)
            for piece in pieces:
                events.put(('stderr', piece))
        events.put(('stderr', pending))

    def read_stdout() -> None:
        assert process.stdout is not None
        while chunk := process.stdout.read(65536):
            stdout_chunks.append(chunk)

    def handle(piece: str) -> None:
        piece = piece.rstrip()
        if not piece:
            return
        match = _PERCENT.search(piece)
        if match:
            on_progress(min(100.0, float(match.group(1))))
        elif piece.startswith('Error:'):
            errors.append(piece)
        else:
            log.append(piece)
            on_log(piece)

    def drain() -> None:
        while True:
            try:
                handle(events.get_nowait()[1])
            except queue.Empty:
                return

    readers = [
        threading.Thread(target=read_stderr, daemon=True),
        threading.Thread(target=read_stdout, daemon=True),
    ]
    for reader in readers:
        reader.start()
    cancelled = False
    while process.poll() is None:
        drain()
        if is_cancelled():
            cancelled = True
            _interrupt(process, grace)
            break
        time.sleep(poll)
    process.wait()
    for reader in readers:
        reader.join(timeout=5)
    drain()
    if cancelled:
        raise Cancelled('cancelled: dspt-geo was stopped and wrote nothing')
    return CliResult(
        process.returncode,
        b''.join(stdout_chunks).decode('utf-8', 'replace'),
        errors,
        log,
    )


def _interrupt(process: subprocess.Popen[bytes], grace: float) -> None:
    """Ask the run to stop (Ctrl-C, so it aborts its outputs); kill it if it hangs."""
    try:
        if os.name == 'nt':
            process.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        else:
            os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
    except ProcessLookupError:
        pass
