"""What every command shares: consoles, progress, JSON/table output, conventional default paths."""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from miam_cli.errors import UserError

# results go to stdout, everything else (logs, warnings, progress) to stderr
out = Console(soft_wrap=True)
if not out.is_terminal and "COLUMNS" not in os.environ:
    out.width = 200  # piped to a file or a batch log: wide tables stay one line per row
err = Console(stderr=True, soft_wrap=True)


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
    """Floats at 4 decimals; text escaped, since selectors like `s2[band=red]` look like Rich markup."""
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
    return escape(str(v))


class Progress:
    """A Rich bar on a terminal; otherwise a plain log line at most every `every` seconds (batch logs)."""

    def __init__(self, description: str, total: int | None = None, every: float = 5.0):
        self.description, self.total, self.every = description, total, every
        self._bar = None
        self._last = 0.0
        self._start = time.monotonic()

    def __enter__(self) -> "Progress":
        if err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def update(self, done: int, total: int | None = None, info: str = "") -> None:
        total = total if total is not None else self.total
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total, description=f"{self.description} {info}".strip())
            return
        now = time.monotonic()
        if now - self._last >= self.every or (total is not None and done >= total):
            self._last = now
            frac = f"{done}/{total}" if total else str(done)
            log(f"{self.description}: {frac} ({now - self._start:.0f}s) {info}".rstrip())

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


def default_path(value: Path | None, conventional: Path, what: str) -> Path:
    """Use the conventional place when the user gave none, and say so (every default is printed)."""
    if value is not None:
        return Path(value)
    log(f"{what}: {conventional} (default)")
    return conventional


def newest_run(runs_dir: Path = Path("runs")) -> Path:
    runs = [p for p in runs_dir.glob("*") if (p / "recipe.yaml").exists()] if runs_dir.is_dir() else []
    if not runs:
        raise UserError(f"no RUN_DIR given and no run under {runs_dir}/ (train one with `miam train RECIPE`)")
    return max(runs, key=lambda p: (p / "recipe.yaml").stat().st_mtime)


def resolve_run(run_dir: Path | None) -> Path:
    if run_dir is None:
        run = newest_run()
        log(f"RUN_DIR: {run} (newest run under runs/)")
        return run
    if not (Path(run_dir) / "recipe.yaml").exists():
        raise UserError(f"{run_dir} is not a run directory (no recipe.yaml)")
    return Path(run_dir)


def shard_from_env(text: str | None) -> str | None:
    """`--shard I/N`, or SLURM's array variables when no --shard was given (0-based task ids)."""
    if text is not None:
        return text
    task, count = os.environ.get("SLURM_ARRAY_TASK_ID"), os.environ.get("SLURM_ARRAY_TASK_COUNT")
    if task is not None and count is not None:
        minimum = int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        shard = f"{int(task) - minimum}/{count}"
        log(f"--shard {shard} (from SLURM_ARRAY_TASK_ID/COUNT)")
        return shard
    return None


def shard_request(text: str | None, merge: bool) -> tuple[int, int] | None:
    """What `--shard I/N` (or the SLURM array) and `--merge` ask of a shardable command: this shard, or None."""
    from miam_cli.store.writer import parse_shard

    text = None if merge else shard_from_env(text)
    return parse_shard(text) if text else None


@contextmanager
def timed(label: str):
    start = time.monotonic()
    yield
    log(f"{label} in {time.monotonic() - start:.1f}s")
