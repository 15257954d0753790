"""Checkpoints: written atomically (temp file + rename), loaded with `weights_only=True`.

Only tensors and plain Python containers go in, so no pickle of arbitrary objects is ever needed.
Every checkpoint carries ``format``: a later miam that changes what a checkpoint holds bumps it, and
an older miam then says so instead of failing on a missing key. Checkpoints from before the key
existed are format 1.

A checkpoint is serialised in memory and written with plain file writes, so a full disk is an
`OSError` (ENOSPC) naming the file, not an opaque error from torch's zip writer.

**The epoch commit** (`commit_epoch`, `reconcile`). An epoch that improved the validation metric
changes two files, `last.pt` and `best.pt`, which no rename can replace together. The new best goes
first to a pending file named by its epoch, then `last.pt` is renamed into place — that rename is
the commit point — and only then the pending file becomes `best.pt`. A crash before the commit
leaves the previous epoch's `last.pt` and `best.pt` untouched (the pending file is discarded and the
epoch redone); a crash after it leaves a pending file that `last.pt` vouches for (`best_epoch`), and
`reconcile` finishes the rename. No crash can leave a `best.pt` that disagrees with `last.pt`.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path

import torch

from miam_cli.errors import UserError
from miam_cli.runs.rundir import RunDir
from miam_cli.store.atomic import atomic_write


CHECKPOINT_FORMAT = 1
MODEL_KEYS = ("model", "model_config")
PENDING_BEST = ".best-pending-e{epoch:06d}.pt"
_PENDING = re.compile(r"^\.best-pending-e(\d+)\.pt$")


def checkpoint_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save({**state, "format": CHECKPOINT_FORMAT}, buf)
    return buf.getvalue()


def save_checkpoint(path: Path, state: dict) -> None:
    _write(Path(path), checkpoint_bytes(state))


def _write(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def commit_epoch(checkpoints: Path, state: dict, improved: bool) -> None:
    """Write an epoch's `last.pt` and, when it improved, its `best.pt` so that a crash at any point
    leaves a consistent pair (see the module's docstring)."""
    data = checkpoint_bytes(state)
    pending = checkpoints / PENDING_BEST.format(epoch=state["progress"]["epoch"])
    if improved:
        _write(pending, data)
    _write(checkpoints / "last.pt", data)  # the commit point
    if improved:
        os.replace(pending, checkpoints / "best.pt")


def reconcile(checkpoints: Path, last: dict | None, log=print) -> None:
    """Repair what a crash can leave in `checkpoints/`, given the loaded `last.pt` (None if absent):
    finish or discard a pending best, remove temporary files, and rebuild a `best.pt` that `last.pt`
    says is the current epoch's but that is missing or older (runs written before the commit order)."""
    progress = last["progress"] if last else {"epoch": 0, "step_in_epoch": 0}
    epoch, at_epoch_end = progress["epoch"], progress["step_in_epoch"] == 0
    best_epoch = best_epoch_of(last) if last else None
    for f in sorted(checkpoints.glob(".*")):
        m = _PENDING.match(f.name)
        if m and int(m.group(1)) == epoch == best_epoch and at_epoch_end:
            os.replace(f, checkpoints / "best.pt")
            log(f"{checkpoints / 'best.pt'}: finished the interrupted commit of epoch {epoch}")
        elif m or f.name.endswith(".tmp"):
            f.unlink()  # an epoch that was never committed (it is redone), or half a file
    best = checkpoints / "best.pt"
    if not (last and epoch > 0 and best_epoch == epoch and at_epoch_end):
        return
    why = "missing" if not best.exists() else "stale" if "best_epoch" not in progress and _epoch_of(best) != epoch else None
    if why:
        _write(best, checkpoint_bytes({k: v for k, v in last.items() if k != "format"}))
        log(f"{best}: rebuilt from last.pt (epoch {epoch}, the best so far; it was {why})")


def best_epoch_of(ckpt: dict) -> int | None:
    """The epoch `best.pt` should hold: recorded since the commit order exists, else derived from the
    metrics (the first epoch reaching the best value; every epoch when no value was finite)."""
    progress = ckpt["progress"]
    if "best_epoch" in progress:
        return progress["best_epoch"]
    best = progress.get("best", -math.inf)
    if not math.isfinite(best):
        return progress["epoch"]
    for row in ckpt.get("metrics", []):
        if any(k.startswith("val_") and v == best for k, v in row.items()):
            return int(row["epoch"])
    return None


def _epoch_of(path: Path) -> int | None:
    try:
        return int(load_checkpoint(path)["progress"]["epoch"])
    except (UserError, KeyError, TypeError, ValueError):
        return None


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated or empty file, foreign pickle: the user must know which file
        raise UserError(f"{path}: cannot load checkpoint: {_load_failure(e)}") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: not a miam checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    version = ckpt.get("format", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{path}: not a miam checkpoint (format {version!r}; miam writes formats 1 to {CHECKPOINT_FORMAT})")
    if version > CHECKPOINT_FORMAT:
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

    path = RunDir(run_dir).checkpoint(which)
    ckpt = load_checkpoint(path, map_location)
    missing = [k for k in MODEL_KEYS if k not in ckpt]
    if missing:
        raise UserError(f"{path}: not a miam model checkpoint (no key {', '.join(map(repr, missing))})")
    try:
        model = MiamModel.from_config(ckpt["model_config"])
        model.load_state_dict(ckpt["model"])
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as e:  # another model, or a damaged one
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{path}: the checkpoint's model cannot be rebuilt ({type(e).__name__}: {first})") from None
    model.eval()
    return model, ckpt
