"""Stopping a run on a signal: a checkpoint, an exit status that says so, a way back.

SIGTERM (``kill``, a scheduler, ``docker stop``), SIGINT (Ctrl+C) and SIGUSR1 (what
SLURM sends ahead of pre-emption or the time limit with ``#SBATCH
--signal=USR1@120``; the requeue signal of Lightning's SLURM plugin) stop a run at
the end of the training step under way, by Lightning's own mechanism: its signal
connector sets ``trainer.received_sigterm`` on SIGTERM, and its loops then raise
``SIGTERMException`` at the next step boundary (under DDP, every process at the
same step). :func:`stop_on_signals` hands SIGINT and SIGUSR1 to that handler, so
the three take one path; :class:`CheckpointOnStop` saves ``last.ckpt`` as the
exception passes; :func:`stop_on_signals` then raises :class:`RunInterruptedError`
with exit status 128 + the signal (143 for SIGTERM, 130 for SIGINT, 138 for
SIGUSR1). Running the same command into the same folder resumes from the
checkpoint.

Lightning's SIGTERMException is a ``SystemExit`` without a status: unhandled, a
killed run would exit 0, as if it had finished (issue #9).

A terminal's Ctrl+C, ``timeout``, SLURM's ``scancel`` and ``docker stop`` signal the
whole process group, DataLoader workers included. torch's workers die on SIGTERM,
and the main process then fails mid-step on the lost worker ("DataLoader worker
... is killed by signal") before the run can stop at a step boundary and save its
checkpoint. :func:`worker_ignores_stop_signals` (the training loaders'
``worker_init_fn``) leaves the stop signals to the main process, which ends its
workers itself.
"""

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..errors import RunInterruptedError

__all__ = (
    'STOP_SIGNALS',
    'CheckpointOnStop',
    'stop_on_signals',
    'worker_ignores_stop_signals',
)

logger = logging.getLogger(__name__)

#: Signals that stop a run with a checkpoint (SIGUSR1: none on Windows).
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name)
    for name in ('SIGTERM', 'SIGINT', 'SIGUSR1')
    if hasattr(signal, name)
)


def worker_ignores_stop_signals(worker_id: int) -> None:
    """``worker_init_fn`` of a training DataLoader: stop signals are the run's to handle.

    A DataLoader worker ignores :data:`STOP_SIGNALS` (the main process stops at the
    next step boundary, saves its checkpoint and ends its workers; a worker whose
    main process is gone exits by itself), then seeds itself as Lightning's own
    ``worker_init_fn`` does when the run seeds its workers (``PL_SEED_WORKERS``,
    set by ``seed_everything(workers=True)``), which a loader's own function
    replaces.

    Args:
        worker_id: the worker's index.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if int(os.environ.get('PL_SEED_WORKERS', '0')):
        pl_worker_init_function(worker_id)


class CheckpointOnStop(L.Callback):
    """Save the run's checkpoint when a signal stops training (Lightning's on_exception).

    Only a stop by signal while fitting is saved: it comes at a step boundary, so
    the checkpoint resumes exactly. Other exceptions may strike mid-step; the run
    then resumes from its last periodic checkpoint.
    """

    def __init__(self, path: Path) -> None:
        """Initialise the callback.

        Args:
            path: the checkpoint file (the run's ``last.ckpt``).
        """
        self.path = path
        #: Step of the checkpoint saved on the stop, if any.
        self.saved_step: int | None = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Save the checkpoint if a signal stopped training."""
        if isinstance(exception, SIGTERMException) and (
            trainer.state.fn == TrainerFn.FITTING
        ):
            trainer.save_checkpoint(self.path, weights_only=False)
            self.saved_step = trainer.global_step


@contextlib.contextmanager
def stop_on_signals(trainer: L.Trainer, what: str, run: Path) -> Iterator[None]:
    """Turn a stop by signal inside the block into :class:`RunInterruptedError`.

    SIGINT and SIGUSR1 are handed to the SIGTERM handler in force (Lightning's,
    while it fits or validates); a second SIGINT, or one outside Lightning's
    loops, stops at once (``KeyboardInterrupt``). Handlers are installed from the
    main thread only, as Python requires.

    Args:
        trainer: the run's Trainer, with a :class:`CheckpointOnStop` callback.
        what: the run, for the message (``'pre-training'``).
        run: the run folder, for the message.

    Raises:
        RunInterruptedError: If a signal stopped the run.
    """
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> Any:
        lightning = signal.getsignal(signal.SIGTERM)
        first = not received
        received.append(signum)
        if not (first and callable(lightning)):
            raise KeyboardInterrupt
        logger.warning(
            'received %s: stopping after this step and saving a checkpoint '
            '(press Ctrl+C again to stop at once)',
            signal.Signals(signum).name,
        )
        return lightning(signum, frame)

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:  # Lightning's own handler takes SIGTERM
            current = signal.getsignal(signum)
            # SIGUSR1: only when nothing else (a user's handler) listens to it.
            if signum == signal.SIGINT or (
                signum != signal.SIGTERM and current in (signal.SIG_DFL, None)
            ):
                previous[signum] = current
                signal.signal(signum, forward)
    try:
        yield
    except (SystemExit, KeyboardInterrupt) as stop:
        # SIGTERMException, or Lightning's exit after a KeyboardInterrupt.
        if not (isinstance(stop, SIGTERMException) or received):
            raise
        stopped_by = received[0] if received else int(signal.SIGTERM)
        saved = next(
            (
                c.saved_step
                for c in trainer.callbacks
                if isinstance(c, CheckpointOnStop)
            ),
            None,
        )
        raise RunInterruptedError(
            _message(what, signal.Signals(stopped_by), run, trainer.global_step, saved),
            stopped_by,
        ) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _message(
    what: str, signum: signal.Signals, run: Path, step: int, saved: int | None
) -> str:
    """One line: what stopped, what was saved, how to resume."""
    if saved is not None:
        kept = f'saved {run / "checkpoints" / "last.ckpt"} at step {saved}'
    else:
        kept = 'the last periodic checkpoint is kept'
    return (
        f'{what} stopped by {signum.name} at step {step}; {kept}. To resume, run the '
        f'same command again (same --out {run})'
    )
