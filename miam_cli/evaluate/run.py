"""A trained run opened for evaluation or attribution: model, store, masking groups, task."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from miam_cli.data.batch import load_split
from miam_cli.engine.checkpoint import load_model
from miam_cli.engine.device import resolve_device
from miam_cli.engine.rundir import run_recipe
from miam_cli.errors import UserError
from miam_cli.evaluate.metrics import MetricSet, metric_set
from miam_cli.files import read_json
from miam_cli.store.reader import TokenStore


@dataclass
class LoadedRun:
    path: Path
    model: torch.nn.Module
    checkpoint: dict
    store: TokenStore
    which: str

    @property
    def layout(self):
        return self.model.layout

    @property
    def groups(self) -> dict[str, list[str]]:
        return {g: list(ms) for g, ms in self.checkpoint["groups"].items()}

    @property
    def task(self) -> str:
        return self.checkpoint["task"]

    @property
    def metrics(self) -> MetricSet:
        return metric_set(self.task, self.store.meta.task.num_classes)

    @property
    def strategy(self) -> str:
        return self.checkpoint["recipe"]["masking"]["strategy"]

    @cached_property
    def modality_specs(self) -> dict:
        """Store modality descriptions the model reads (what selectors resolve against)."""
        return {m: self.store.meta.modalities[m] for m in self.layout.names}

    def split(self, name: str, max_bytes: int = 4 << 30):
        return load_split(self.store, name, self.layout.names, max_bytes)


def open_run(run_dir: Path, which: str = "best", device: str = "cpu") -> LoadedRun:
    run_dir = Path(run_dir)
    device = str(resolve_device(device))  # a device this machine lacks: exit 2, not a torch error
    if not (run_dir / "checkpoints" / f"{which}.pt").exists():
        raise UserError(f"{run_dir}: no checkpoints/{which}.pt (is the training finished? try --checkpoint last)")
    model, ckpt = load_model(run_dir, which, map_location=device)
    path = run_dir / "checkpoints" / f"{which}.pt"
    missing = [k for k in ("groups", "task", "recipe") if k not in ckpt]
    if missing:
        raise UserError(f"{path}: not a checkpoint of a miam training run (no key {', '.join(map(repr, missing))})")
    store = TokenStore(_store_path(run_dir))
    for m in model.layout.modalities:  # the store the run names must still be the one it was trained on
        spec = store.meta.modalities.get(m.name)
        if spec is None or (spec.tokens, spec.features) != (m.tokens, m.features):
            raise UserError(f"{path}: the model reads {m.name} as {m.tokens} tokens x {m.features} features, "
                            f"but the store {store.path} has " + (f"{spec.tokens} x {spec.features}" if spec else "no such modality"))
    model.to(device)
    return LoadedRun(run_dir, model, ckpt, store, which)


def _store_path(run_dir: Path) -> Path:
    """The recipe's store, as written (relative to where training ran), else the absolute path in env.json."""
    recipe = run_recipe(run_dir)
    candidates = [Path(recipe["store"])]
    if (candidates[0] / "store.json").exists():
        return candidates[0]
    env_file = run_dir / "env.json"
    if env_file.exists():
        env = read_json(env_file, "run environment")
        if isinstance(env, dict) and isinstance(env.get("store"), str):
            candidates.append(Path(env["store"]))
    for c in candidates[1:]:
        if (c / "store.json").exists():
            return c
    raise UserError(f"{run_dir}: its store {recipe['store']} is not found (looked at {', '.join(map(str, candidates))})")
