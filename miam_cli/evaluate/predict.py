"""Running a trained model on a split with only some tokens visible (the rest dropped, not replaced)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from miam_cli.device import autocast
from miam_cli.scoring.metrics import compute_metrics


@dataclass
class Prediction:
    logits: np.ndarray  # [N, C]
    targets: np.ndarray  # [N, C] multi-hot or [N] class index
    visible_tokens: float  # mean number of visible tokens per sample


def visible_keep(batch_valid: dict[str, torch.Tensor], visible: dict[str, torch.Tensor] | None, names: list[str]) -> dict[str, torch.Tensor]:
    """keep = valid & visible (per-token mask shared by all samples); a modality absent from `visible` is dropped."""
    if visible is None:
        return {m: batch_valid[m] for m in names}
    return {m: batch_valid[m] & visible[m].to(batch_valid[m].device)[None] if m in visible else torch.zeros_like(batch_valid[m]) for m in names}


@torch.no_grad()
def iter_logits(model, data, visible: dict[str, torch.Tensor] | None = None, batch_size: int = 1024, device="cpu",
                rows: torch.Tensor | None = None):
    """Yield (batch, keep, logits [B, C] float32 on the CPU) for each batch of `data` (anything with `.batches`)."""
    model.eval()
    names = model.layout.names
    for batch in data.batches(batch_size, order=rows):
        batch = batch.to(device)
        keep = visible_keep(batch.valid, visible, names)
        with autocast(device):
            out = model({m: batch.values[m] for m in names}, keep)
        yield batch, keep, out.float().cpu()


def predict(model, data, visible: dict[str, torch.Tensor] | None = None, batch_size: int = 1024, device="cpu",
            rows: torch.Tensor | None = None) -> Prediction:
    """`data` is a split (SplitTensors/StoreBatches); `visible` maps store modality -> bool [T_m]."""
    logits, targets, count = [], [], 0
    for batch, keep, out in iter_logits(model, data, visible, batch_size, device, rows):
        count += sum(int(k.sum()) for k in keep.values())
        logits.append(out)
        targets.append(batch.target.cpu())
    n = sum(len(x) for x in logits)
    return Prediction(torch.cat(logits).numpy(), torch.cat(targets).numpy(), count / max(n, 1))


def evaluate(model, data, task_type: str, visible=None, batch_size: int = 1024, device="cpu", rows=None) -> dict:
    pred = predict(model, data, visible, batch_size, device, rows)
    # every metric here is a ranking (AUC, top-k), invariant to the monotone sigmoid/softmax, so they
    # are computed on logits: vectorised sigmoid kernels can differ in the last bit between SIMD lanes
    # and the tail, which would break the exact ties of identical logits
    metrics = compute_metrics(task_type, pred.targets, pred.logits)
    return {**metrics, "visible_tokens": pred.visible_tokens, "samples": int(len(pred.targets))}


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Per-class probabilities: sigmoid for multi-label (independent presences), softmax for multi-class."""
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=1)


def group_visibility(layout, group: str | list[str]) -> dict[str, torch.Tensor]:
    """Every token of the store modalities in the named masking group(s) visible, nothing else."""
    groups = [group] if isinstance(group, str) else list(group)
    gidx = {layout.group_names.index(g) for g in groups}
    return {m.name: torch.ones(m.tokens, dtype=torch.bool) for m in layout.modalities if m.group in gidx}

