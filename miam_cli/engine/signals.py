"""Stop signals that arrive before the trainer is ready to handle them.

SLURM sends SIGTERM (or SIGUSR1) before a time limit or a preemption; `miam train` answers with
exit 75 ("continue with --resume"). The trainer installs its handler only once the store is read and
the model built, seconds after the process started: a signal in that window used to kill the
process (exit -15), which a requeueing job script reads as a failure. `deferred_stop_signals` is
entered first thing in `miam train` (before torch is imported) and remembers such a signal; the
trainer then stops before its first step, writes last.pt and exits 75.
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


def stop_received() -> bool:
    """Whether a stop signal arrived while deferred (before the trainer's own handler was installed)."""
    return bool(_received)
