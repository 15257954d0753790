"""Training losses: BCE-with-logits for multi-label (optionally class-weighted), cross-entropy for
multi-class."""

from __future__ import annotations

from torch import Tensor, nn

TASK_TYPES = ("multilabel", "multiclass")


def positive_class_weights(targets: Tensor, clip: float = 100.0) -> Tensor:
    """Per-class `pos_weight` for BCE from multi-hot targets [N, C]: negatives / positives.

    Presence-absence data are very sparse, so an unweighted BCE learns to predict absence everywhere;
    weighting positives by the class's negative/positive ratio balances the two. Counts get +1 so a
    class never seen positive (or never negative) gets a finite weight, and the result is clipped to
    [1/clip, clip] so a handful of rare species cannot dominate the loss.
    """
    if targets.ndim != 2:
        raise ValueError(f"targets must be multi-hot [N, C], got shape {list(targets.shape)}")
    if clip < 1:
        raise ValueError(f"clip must be >= 1, got {clip}")
    positives = targets.float().sum(0)
    negatives = targets.shape[0] - positives
    return ((negatives + 1) / (positives + 1)).clamp(1.0 / clip, clip)


def make_loss(task_type: str, class_weights: Tensor | None = None) -> nn.Module:
    """Loss for a task: `multilabel` -> BCEWithLogitsLoss(pos_weight=class_weights) on [B, C] float
    targets; `multiclass` -> CrossEntropyLoss(weight=class_weights) on [B] int64 targets."""
    if task_type == "multilabel":
        return nn.BCEWithLogitsLoss(pos_weight=class_weights)
    if task_type == "multiclass":
        return nn.CrossEntropyLoss(weight=class_weights)
    raise ValueError(f"unknown task type {task_type!r}; expected one of {TASK_TYPES}")
