"""Checkpoints: written atomically (temp file + rename), loaded with `weights_only=True`.

Only tensors and plain Python containers go in, so no pickle of arbitrary objects is ever needed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from miam_cli.errors import UserError
from miam_cli.store.atomic import atomic_write


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, foreign pickle: the user must know which file
        raise UserError(f"{path}: cannot load checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def load_model(run_dir: Path, which: str = "best", map_location="cpu"):
    """Rebuild the model of a run from its checkpoint (`best` or `last`)."""
    from miam_cli.model.transformer import MiamModel

    ckpt = load_checkpoint(Path(run_dir) / "checkpoints" / f"{which}.pt", map_location)
    model = MiamModel.from_config(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt
