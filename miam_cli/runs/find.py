"""Which run directory a command means: the one named, the newest under runs/, or the newest whose name
starts as given (`runs/demo-miam-...`, as the README writes run names whose time stamps nobody types)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from miam_cli.errors import UserError
from miam_cli.runs.rundir import RunDir


def newest_run(runs_dir: Path = Path("runs"), prefix: str = "") -> Path:
    runs = [p for p in runs_dir.glob(f"{prefix}*") if RunDir(p).exists()] if runs_dir.is_dir() else []
    if not runs:
        where = f"{runs_dir / prefix}..." if prefix else f"{runs_dir}/"
        raise UserError(f"no run matches {where} (train one with `miam train RECIPE`)" if prefix else
                        f"no RUN_DIR given and no run under {where} (train one with `miam train RECIPE`)")
    return max(runs, key=lambda p: RunDir(p).recipe_file.stat().st_mtime)


def resolve_run(run_dir: Path | None, log: Callable[[str], None] = lambda _m: None) -> Path:
    """The run given; the newest under runs/ when none is; `runs/demo-miam-...` is the newest run whose
    name starts `demo-miam-`. A run found rather than named is logged (every default is said)."""
    if run_dir is None:
        run = newest_run()
        log(f"RUN_DIR: {run} (newest run under runs/)")
        return run
    text = str(run_dir)
    if text.endswith("...") and not Path(run_dir).exists():
        parent, prefix = Path(text[:-3]).parent, Path(text[:-3]).name
        run = newest_run(parent, prefix)
        log(f"RUN_DIR: {run} (newest run matching {text})")
        return run
    if not RunDir(run_dir).exists():
        raise UserError(f"{run_dir} is not a run directory (no recipe.yaml)")
    return Path(run_dir)
