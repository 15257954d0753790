"""A trained run opened for evaluation or attribution: model, store, masking groups, task."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from miam_cli.data.batch import load_split
from miam_cli.device import resolve_device
from miam_cli.errors import UserError
from miam_cli.runs.checkpoint import load_model
from miam_cli.runs.rundir import RunDir, store_path
from miam_cli.store.reader import TokenStore


@dataclass
class LoadedRun:
    path: Path
    model: torch.nn.Module
    checkpoint: dict
    store: TokenStore
    which: str

    @property
    def rundir(self) -> RunDir:
        """Where the run's files are (eval/, attribution/, predict/, maps/, ...)."""
        return RunDir(self.path)

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
    path = RunDir(run_dir).checkpoint(which)
    if not path.exists():
        raise UserError(f"{run_dir}: no checkpoints/{which}.pt (is the training finished? try --checkpoint last)")
    model, ckpt = load_model(run_dir, which, map_location=device)
    missing = [k for k in ("groups", "task", "recipe") if k not in ckpt]
    if missing:
        raise UserError(f"{path}: not a checkpoint of a miam training run (no key {', '.join(map(repr, missing))})")
    store = TokenStore(store_path(run_dir))
    for m in model.layout.modalities:  # the store the run names must still be the one it was trained on
        spec = store.meta.modalities.get(m.name)
        if spec is None or (spec.tokens, spec.features) != (m.tokens, m.features):
            raise UserError(f"{path}: the model reads {m.name} as {m.tokens} tokens x {m.features} features, "
                            f"but the store {store.path} has " + (f"{spec.tokens} x {spec.features}" if spec else "no such modality"))
    model.to(device)
    return LoadedRun(run_dir, model, ckpt, store, which)
