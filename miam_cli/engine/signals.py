"""Stop signals that arrive before the trainer is ready to handle them.

SLURM sends SIGTERM (or SIGUSR1) before a time limit or a preemption; `miam train` answers with
exit 75 ("continue with --resume"). The trainer installs its handler only once the store is read and
the model built, seconds after the process started: a signal in that window used to kill the
process (exit -15), which a requeueing job script reads as a failure. `deferred_stop_signals` is
entered first thing in `miam train` (before torch is imported) and remembers such a signal; the
trainer then stops before its first step, writes last.pt and exits 75.

Commands that continue when run again (`miam demo`: every finished step is kept) take a stop signal
anywhere with `stop_signals_raise`: it raises `Stopped` where the process is, and the CLI exits 75
with one line. While the trainer runs, its own handler takes over (last.pt first, then `Preempted`).
"""

from __future__ import annotations

import contextlib
import signal

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
_received: list[int] = []


@contextlib.contextmanager
def deferred_stop_signals():
    """Remember SIGUSR1/SIGTERM until the trainer takes over; the previous handlers come back on exit."""
    previous = {}
    for sig in STOP_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, lambda signum, frame: _received.append(signum))
        except ValueError:  # not the main thread: nothing to defer
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        _received.clear()


RUN_AGAIN = "the steps finished so far are kept: run the same command again to continue"


class Stopped(Exception):
    """A stop signal reached a command that continues when run again (exit 75, like a preempted `train`)."""

    exit_code = 75


@contextlib.contextmanager
def stop_signals_raise(again: str = RUN_AGAIN):
    """SIGUSR1/SIGTERM raise `Stopped` (its message says `again`: how to continue); handlers restored on exit."""
    def stop(signum, frame):
        raise Stopped(f"{signal.Signals(signum).name} received; {again}")

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def stop_received() -> bool:
    """Whether a stop signal arrived while deferred (before the trainer's own handler was installed)."""
    return bool(_received)
