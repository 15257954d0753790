"""Devices: which torch device a name means on this machine, and the precision a model runs in there.

Every command that runs a model (train, eval-subsets, attribute, predict, map) goes through these two."""

from __future__ import annotations

import torch

from miam_cli.errors import UserError


def resolve_device(name: str) -> torch.device:
    """`auto`, `cpu`, `cuda`, `cuda:N` or `mps`; a device this machine lacks is a UserError, not a torch crash."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r}: CUDA is not available on this machine; use cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {name!r}: MPS is not available on this machine; use cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    return device


def autocast(device, enabled: bool = True):
    """bfloat16 autocast on a GPU (unless `enabled` is False: `train.amp: false`), nothing on the CPU,
    where runs are exact and deterministic."""
    if enabled and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)
