"""Checkpoints: written atomically (temp file + rename), loaded with `weights_only=True`.

Only tensors and plain Python containers go in, so no pickle of arbitrary objects is ever needed.
Every checkpoint carries ``format``: a later miam that changes what a checkpoint holds bumps it, and
an older miam then says so instead of failing on a missing key. Checkpoints from before the key
existed are format 1.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from miam_cli.errors import UserError
from miam_cli.store.atomic import atomic_write


CHECKPOINT_FORMAT = 1
MODEL_KEYS = ("model", "model_config")


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(Path(path), lambda tmp: torch.save({**state, "format": CHECKPOINT_FORMAT}, tmp))


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, foreign pickle: the user must know which file
        raise UserError(f"{path}: cannot load checkpoint: {_load_failure(e)}") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: not a miam checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    version = ckpt.get("format", 1)
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT:
        raise UserError(f"{path}: checkpoint format {version!r} is newer than this miam reads "
                        f"(up to {CHECKPOINT_FORMAT}); upgrade miam")
    return ckpt


def _load_failure(error: Exception) -> str:
    """torch's reason in whole sentences (its messages run to several lines of advice that does not
    apply here, such as loading with weights_only=False)."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0].strip()
        return f"not a checkpoint miam wrote: the safe loader (weights_only) refuses its content ({detail})"
    first = re.split(r"(?<=\.)\s", text.strip().splitlines()[0] if text.strip() else type(error).__name__)[0]
    if "zip archive" in first or "central directory" in first:
        return f"the file is truncated or damaged ({first.rstrip('.')}); train again, or use the other checkpoint (best/last)"
    return f"{type(error).__name__}: {first}"


def load_model(run_dir: Path, which: str = "best", map_location="cpu"):
    """Rebuild the model of a run from its checkpoint (`best` or `last`)."""
    from miam_cli.model.transformer import MiamModel

    path = Path(run_dir) / "checkpoints" / f"{which}.pt"
    ckpt = load_checkpoint(path, map_location)
    missing = [k for k in MODEL_KEYS if k not in ckpt]
    if missing:
        raise UserError(f"{path}: not a miam model checkpoint (no key {', '.join(map(repr, missing))})")
    model = MiamModel.from_config(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt
