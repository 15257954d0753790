"""The run directory: recipe.yaml (resolved), env.json, checkpoints/, metrics.csv, plots.

Written by training (`RunDir`), read by everything that uses a trained run (`run_recipe`,
`store_path`); `miam_cli.runs.loaded` opens one with its model."""

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
from miam_cli.recipe import Recipe, recipe_to_yaml, validate_recipe
from miam_cli.errors import UserError
from miam_cli.files import read_json, read_yaml, writable_folder
from miam_cli.store.atomic import atomic_write_json, atomic_write_text


def _inside(*parts: str) -> property:
    """A file or folder of the run, at this place below its root."""
    return property(lambda self: self.path.joinpath(*parts))


class RunDir:
    """Where each file of a run lives (the one place that knows the layout), and writing it."""

    checkpoints = _inside("checkpoints")  # best.pt, last.pt
    recipe_file = _inside("recipe.yaml")  # the resolved recipe, written when training starts
    env_file = _inside("env.json")  # versions, device, seed, host, the store's absolute path
    metrics_file = _inside("metrics.csv")  # one row per epoch
    eval_dir = _inside("eval")
    subsets_table = _inside("eval", "subsets.csv")  # what eval-subsets measured; compare and attribution read it
    attribution_dir = _inside("attribution")
    predict_dir = _inside("predict")
    maps_dir = _inside("maps")

    def __init__(self, path: Path):
        self.path = Path(path)

    def checkpoint(self, which: str = "best") -> Path:
        """`checkpoints/best.pt` or `checkpoints/last.pt`."""
        return self.checkpoints / f"{which}.pt"

    def exists(self) -> bool:
        """A run dir is a folder with a recipe.yaml (written when training starts)."""
        return self.recipe_file.exists()

    @classmethod
    def claim(cls, recipe: Recipe, out: Path | None, resume: bool) -> "RunDir":
        """The run dir to train `recipe` into (`out`, else a new name under runs/), created; a finished
        or started run is never overwritten unless resumed. Under DDP only rank 0 calls this
        (`engine.train.claim_run_dir` shares the name)."""
        path = Path(out) if out is not None else default_run_path(recipe)
        if path.exists() and not path.is_dir():
            raise UserError(f"{path}: is a file, not a run directory (--out names a folder)")
        if path.exists() and _holds_files(path) and not resume:
            raise UserError(f"{path} already holds a run; pass --resume to continue it or --out for a new one")
        if resume and not cls(path).exists() and out is None:
            raise UserError("--resume needs --out RUN_DIR (the run to continue)")
        writable_folder(path / "checkpoints", "run directory")
        return cls(path)

    def remove_temporaries(self) -> None:
        """Half-written files a killed process left (atomic writes name them `.<name>.<random>.tmp`)."""
        for f in self.path.glob(".*.tmp"):
            f.unlink(missing_ok=True)

    def write_start(self, recipe: Recipe, trainer) -> None:
        atomic_write_text(self.recipe_file, recipe_to_yaml(recipe))
        atomic_write_json(self.env_file, environment(trainer))

    def write_metrics(self, keys: list[str], rows: list[dict], name: str = "metrics.csv") -> None:
        """One row per epoch (metrics.csv), or one per imbalance update (imbalance.csv)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, "") for k in keys})
        atomic_write_text(self.path / name, buf.getvalue())


def _holds_files(path: Path) -> bool:
    """Anything but empty folders: a training that failed on its first check (a store that is not one)
    leaves `checkpoints/` behind, which must not block the corrected command."""
    return any(not p.is_dir() for p in path.rglob("*"))


def run_recipe(run_dir: Path) -> dict:
    """The resolved recipe a run was trained with (its `recipe.yaml`), validated like any recipe."""
    path = RunDir(run_dir).recipe_file
    data = read_yaml(path, "run recipe")
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a run's recipe (a YAML mapping is expected)")
    return validate_recipe(data, source=str(path)).dump()


def store_path(run_dir: Path) -> Path:
    """The run's token store: the recipe's, as written (relative to where training ran), else the absolute
    path env.json recorded at the start of training."""
    run_dir = Path(run_dir)
    recipe = run_recipe(run_dir)
    candidates = [Path(recipe["store"])]
    if (candidates[0] / "store.json").exists():
        return candidates[0]
    env_file = RunDir(run_dir).env_file
    if env_file.exists():
        env = read_json(env_file, "run environment")
        if isinstance(env, dict) and isinstance(env.get("store"), str):
            candidates.append(Path(env["store"]))
    for c in candidates[1:]:
        if (c / "store.json").exists():
            return c
    raise UserError(f"{run_dir}: its store {recipe['store']} is not found (looked at {', '.join(map(str, candidates))})")


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
