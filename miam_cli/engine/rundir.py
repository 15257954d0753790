"""The run directory: recipe.yaml (resolved), env.json, checkpoints/, metrics.csv, plots."""

from __future__ import annotations

import csv
import io
import os
import platform
import socket
import subprocess
import time
from pathlib import Path

from miam_cli import __version__
from miam_cli.engine import dist
from miam_cli.engine.recipe import Recipe, recipe_to_yaml, validate_recipe
from miam_cli.errors import UserError
from miam_cli.files import read_yaml, writable_folder
from miam_cli.store.atomic import atomic_write_json, atomic_write_text


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @classmethod
    def for_training(cls, recipe: Recipe, out: Path | None, resume: bool) -> "RunDir":
        """Rank 0 names (and creates) the run dir once and shares it; other ranks create nothing.
        A finished or started run is never overwritten. A refusal on rank 0 is raised on every rank,
        so no rank is left waiting for the name."""
        env = dist.current()
        decided: dict = {}
        failure: Exception | None = None
        if env.is_main:
            try:
                decided["path"] = str(cls._claim(recipe, out, resume))
            except Exception as e:  # told to every rank before raising, or they would wait forever
                failure, decided["error"] = e, str(e)
        decided = dist.broadcast_object(decided, env)
        if failure is not None:
            raise failure
        if "error" in decided:
            raise UserError(f"rank 0: {decided['error']}")
        return cls(Path(decided["path"]))

    @staticmethod
    def _claim(recipe: Recipe, out: Path | None, resume: bool) -> Path:
        path = Path(out) if out is not None else default_run_path(recipe)
        if path.exists() and not path.is_dir():
            raise UserError(f"{path}: is a file, not a run directory (--out names a folder)")
        if path.exists() and any(path.iterdir()) and not resume:
            raise UserError(f"{path} already holds a run; pass --resume to continue it or --out for a new one")
        if resume and not (path / "recipe.yaml").exists() and out is None:
            raise UserError("--resume needs --out RUN_DIR (the run to continue)")
        writable_folder(path / "checkpoints", "run directory")
        return path

    def remove_temporaries(self) -> None:
        """Half-written files a killed process left (atomic writes name them `.<name>.<random>.tmp`)."""
        for f in self.path.glob(".*.tmp"):
            f.unlink(missing_ok=True)

    def write_start(self, recipe: Recipe, trainer) -> None:
        atomic_write_text(self.path / "recipe.yaml", recipe_to_yaml(recipe))
        atomic_write_json(self.path / "env.json", environment(trainer))

    def write_metrics(self, keys: list[str], rows: list[dict], name: str = "metrics.csv") -> None:
        """One row per epoch (metrics.csv), or one per imbalance update (imbalance.csv)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, "") for k in keys})
        atomic_write_text(self.path / name, buf.getvalue())


def run_recipe(run_dir: Path) -> dict:
    """The resolved recipe a run was trained with (its `recipe.yaml`), validated like any recipe."""
    path = Path(run_dir) / "recipe.yaml"
    data = read_yaml(path, "run recipe")
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a run's recipe (a YAML mapping is expected)")
    return validate_recipe(data, source=str(path)).dump()


def default_run_path(recipe: Recipe) -> Path:
    stem = recipe.name or Path(recipe.store).name
    kind = f"oracle-{'+'.join(recipe.oracle)}" if recipe.oracle else recipe.masking.strategy
    base = Path("runs") / f"{stem}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def environment(trainer) -> dict:
    import numpy
    import torch

    env = trainer.env
    return {
        "miam_version": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "device": str(trainer.device),
        "git_commit": _git_commit(),
        "seed": trainer.recipe.train.seed,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "world_size": env.world_size,
        "dist_source": env.source,
        "slurm": {k: v for k, v in os.environ.items() if k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST", "SLURM_NTASKS")},
        "store": str(Path(trainer.recipe.store).resolve()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
