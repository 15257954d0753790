"""A trained run opened for evaluation or attribution: model, store, masking groups, task."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
import yaml

from miam_cli.data.batch import load_split
from miam_cli.engine.checkpoint import load_model
from miam_cli.errors import UserError
from miam_cli.evaluate.metrics import MetricSet, metric_set
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


def resolve_device(name: str) -> str:
    """`auto` -> cuda when a GPU is there, else cpu; anything else as given."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def open_run(run_dir: Path, which: str = "best", device: str = "cpu") -> LoadedRun:
    run_dir = Path(run_dir)
    device = resolve_device(device)
    if not (run_dir / "checkpoints" / f"{which}.pt").exists():
        raise UserError(f"{run_dir}: no checkpoints/{which}.pt (is the training finished? try --checkpoint last)")
    model, ckpt = load_model(run_dir, which, map_location=device)
    model.to(device)
    return LoadedRun(run_dir, model, ckpt, TokenStore(_store_path(run_dir)), which)


def _store_path(run_dir: Path) -> Path:
    """The recipe's store, as written (relative to where training ran), else the absolute path in env.json."""
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    candidates = [Path(recipe["store"])]
    env_file = run_dir / "env.json"
    if env_file.exists():
        candidates.append(Path(json.loads(env_file.read_text()).get("store", "")))
    for c in candidates:
        if (c / "store.json").exists():
            return c
    raise UserError(f"{run_dir}: its store {recipe['store']} is not found (looked at {', '.join(map(str, candidates))})")
