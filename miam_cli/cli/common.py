"""What every command shares: consoles, progress, JSON/table output, conventional default paths."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# results go to stdout, everything else (logs, warnings, progress) to stderr
out = Console(soft_wrap=True)
if not out.is_terminal and "COLUMNS" not in os.environ:
    out.width = 200  # piped to a file or a batch log: wide tables stay one line per row
err = Console(stderr=True, soft_wrap=True)


def use_threads(threads: int | None, workers: int = 0) -> None:
    """Apply the thread policy to this command's process (it prints its choice once)."""
    from miam_cli import threads as policy

    policy.configure(threads, workers, log=log)


def log(message: str) -> None:
    err.print(escape(message), highlight=False)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


def print_json(obj) -> None:
    from miam_cli.store.atomic import json_default

    sys.stdout.write(json.dumps(obj, indent=2, default=json_default) + "\n")


def print_table(title: str, columns: list[str], rows: list[list], caption: str | None = None) -> None:
    table = Table(title=escape(title), caption=escape(caption) if caption else None)
    for c in columns:
        table.add_column(escape(c), overflow="fold")
    for r in rows:
        table.add_row(*[_cell(v) for v in r])
    out.print(table)


def _cell(v) -> str:
    """Floats at 4 decimals, or 3 significant digits below 0.001 (a standard error of 2e-05 is not
    0.0000); text escaped, since selectors like `s2[band=red]` look like Rich markup."""
    if isinstance(v, float):
        return f"{v:.3g}" if 0 < abs(v) < 1e-3 else f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
    return escape(str(v))


class Progress:
    """A Rich bar on a terminal; otherwise a plain log line at most every `every` seconds (batch logs).

    Both show a time remaining, from the rate since the first update. A count that starts high (a
    resumed run) or goes back (the demo's second model) restarts the rate, so the estimate is never
    made from a jump that took no time."""

    def __init__(self, description: str, total: int | None = None, every: float = 5.0, console: Console | None = None,
                 clock=time.monotonic):
        self.description, self.total, self.every = description, total, every
        self.console, self.clock = console or err, clock
        self._bar = None
        self._last = 0.0
        self._start = clock()
        self._origin: tuple[float, int] | None = None  # (time, count) the rate is measured from
        self._done, self._total = -1, total

    def __enter__(self) -> "Progress":
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                     console=self.console, transient=False, get_time=self.clock)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def update(self, done: int, total: int | None = None, info: str = "") -> None:
        total = total if total is not None else self.total
        restart = self._origin is None or done < self._done
        self._done, self._total = done, total
        now = self.clock()
        if restart:
            self._origin = (now, done)
        if self._bar is not None:
            description = f"{self.description} {info}".strip()
            if restart:  # no speed sample from the jump: Rich would take it as progress made in no time
                self._bar.reset(self._task, total=total, completed=done, description=description)
            else:
                self._bar.update(self._task, completed=done, total=total, description=description)
            return
        if now - self._last >= self.every or (total is not None and done >= total):
            self._last = now
            frac = f"{done}/{total}" if total else str(done)
            eta = self.remaining(now)
            left = f", {_clock(eta)} left" if eta is not None and done < (total or 0) else ""
            self.console.print(escape(f"{self.description}: {frac} ({now - self._start:.0f}s{left}) {info}".rstrip()), highlight=False)

    def remaining(self, now: float | None = None) -> float | None:
        """Seconds left (what the bar shows); None before any progress is measured."""
        if self._bar is not None:
            return self._bar.tasks[0].time_remaining
        if self._origin is None or self._total is None:
            return None
        t0, d0 = self._origin
        elapsed, made = (now or self.clock()) - t0, self._done - d0
        return None if made <= 0 or elapsed <= 0 else (self._total - self._done) * elapsed / made

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def attribution_progress(bar: Progress):
    """The samplers' callback: coalition evaluations against the plan, and the largest standard error
    against the one at which sampling stops (--tolerance; none with --tolerance 0: the budget decides)."""
    def update(done: int, planned: int, largest: float | None, target: float | None) -> None:
        stops = "" if target is None else f" (stops at {target:.2g})"
        errors = "standard errors not known yet" if largest is None else f"largest std error {largest:.2g}{stops}"
        bar.update(done, planned, errors)
    return update


def epoch_progress(bar: Progress):
    """The trainer's callback (epoch, step, steps per epoch, epochs) as one count over the whole run,
    so the time remaining is the run's, in every epoch."""
    def update(epoch: int, step: int, steps: int, epochs: int) -> None:
        bar.update(epoch * steps + step, epochs * steps, f"epoch {epoch + 1}/{epochs}")
    return update


def default_path(value: Path | None, conventional: Path, what: str) -> Path:
    """Use the conventional place when the user gave none, and say so (every default is printed)."""
    if value is not None:
        return Path(value)
    log(f"{what}: {conventional} (default)")
    return conventional
