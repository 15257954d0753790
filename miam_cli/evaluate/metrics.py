"""Evaluation metrics (numpy only at run time; sklearn is used by the tests as the reference).

Multi-label: macro AUC over the classes that have both outcomes in the split, sample-averaged F1 at
top-k and recall@k. Multi-class: top-1 / top-5 accuracy. Inputs may be numpy arrays or torch tensors.
"""

from __future__ import annotations

import math

import numpy as np
import torch

TASK_TYPES = ("multilabel", "multiclass")

# Columns ranked at once by macro_auc: bounds peak memory (N=1e4 x 256 x ~5 float64/int64 arrays
# ~ 100 MB) while keeping the work vectorised.
_AUC_BLOCK = 256


def _np(x) -> np.ndarray:
    """numpy view of an array-like or a torch tensor (detached, on CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _scores_2d(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = _np(y_true) > 0.5  # multi-hot may arrive as float32
    s = _np(scores)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)  # float32 stays as is: sorting it is faster and ties are the same
    if y.ndim != 2 or s.shape != y.shape:
        raise ValueError(f"y_true {y.shape} and scores {s.shape} must both be [N, C]")
    return y, s


def tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each column of `scores` [N, C] sorted: (order, start, end), where positions start..end (0-based,
    in sorted order) hold the tie group of the value at each sorted position. One sort per column."""
    n = scores.shape[0]
    order = np.argsort(scores, axis=0, kind="stable")
    ordered = np.take_along_axis(scores, order, axis=0)
    pos = np.broadcast_to(np.arange(n)[:, None], scores.shape)
    is_start = np.ones(scores.shape, dtype=bool)
    is_start[1:] = ordered[1:] != ordered[:-1]
    is_end = np.ones(scores.shape, dtype=bool)
    is_end[:-1] = is_start[1:]
    start = np.maximum.accumulate(np.where(is_start, pos, 0), axis=0)
    end = np.minimum.accumulate(np.where(is_end, pos, n - 1)[::-1], axis=0)[::-1]
    return order, start, end


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of each column of `scores` [N, C], ties given their average rank (like scipy's
    rankdata(method='average') per column), computed with one sort per column and no Python loop."""
    order, start, end = tie_groups(scores)
    # A tie group spans [start, end]; every member gets the mean of the 1-based ranks start+1..end+1.
    ranks = np.empty(scores.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (start + end) / 2.0 + 1.0, axis=0)
    return ranks


def per_class_auc(y_true, scores) -> np.ndarray:
    """ROC AUC of each class [C] (Mann-Whitney U with average ranks for ties, as sklearn);
    NaN for a class without both outcomes."""
    y, s = _scores_2d(y_true, scores)
    n_pos = y.sum(axis=0).astype(np.float64)
    n_neg = y.shape[0] - n_pos
    auc = np.full(y.shape[1], np.nan)
    scored = np.flatnonzero((n_pos > 0) & (n_neg > 0))
    for lo in range(0, len(scored), _AUC_BLOCK):
        cols = scored[lo : lo + _AUC_BLOCK]
        ranks = average_ranks(s[:, cols])
        rank_sum = np.where(y[:, cols], ranks, 0.0).sum(axis=0)
        p, q = n_pos[cols], n_neg[cols]
        auc[cols] = (rank_sum - p * (p + 1) / 2.0) / (p * q)
    return auc


def macro_auc(y_true, scores) -> tuple[float, int]:
    """(mean AUC over the classes with both outcomes, number of such classes); (NaN, 0) if none."""
    auc = per_class_auc(y_true, scores)
    scored = auc[~np.isnan(auc)]
    if scored.size == 0:
        return math.nan, 0
    return float(scored.mean()), int(scored.size)


def _topk_indicator(scores: np.ndarray, k: int) -> np.ndarray:
    """bool [N, C] marking each row's k highest scores (k capped at C)."""
    n, c = scores.shape
    k = min(int(k), c)
    pred = np.zeros((n, c), dtype=bool)
    if k <= 0 or n == 0:
        return pred
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    np.put_along_axis(pred, top, True, axis=1)
    return pred


def f1_at_k(y_true, scores, k: int = 25) -> float:
    """Sample-averaged F1 with the top-k classes as the predicted set (= sklearn f1_score(y_true,
    topk_indicator, average='samples', zero_division=0)). NaN for an empty split."""
    y, s = _scores_2d(y_true, scores)
    if y.shape[0] == 0:
        return math.nan
    pred = _topk_indicator(s, k)
    hits = (pred & y).sum(axis=1)
    denom = pred.sum(axis=1) + y.sum(axis=1)
    # F1 = 2|P∩T| / (|P| + |T|); a sample with nothing predicted and nothing true scores 0.
    f1 = np.divide(2.0 * hits, denom, out=np.zeros(len(hits)), where=denom > 0)
    return float(f1.mean())


def recall_at_k(y_true, scores, k: int = 25) -> float:
    """Mean over samples with at least one positive of |top-k ∩ positives| / |positives|; NaN if none."""
    y, s = _scores_2d(y_true, scores)
    n_true = y.sum(axis=1)
    keep = n_true > 0
    if not keep.any():
        return math.nan
    hits = (_topk_indicator(s[keep], k) & y[keep]).sum(axis=1)
    return float((hits / n_true[keep]).mean())


def topk_accuracy(labels, scores, k: int) -> float:
    """Fraction of samples whose true class is among the k highest scores (= sklearn
    top_k_accuracy_score with labels=range(C)). Ties are broken as sklearn does: among equal scores
    the higher class index ranks first. NaN for an empty split."""
    y = _np(labels).astype(np.int64).reshape(-1)
    s = _np(scores).astype(np.float64, copy=False)
    if s.ndim != 2 or s.shape[0] != y.shape[0]:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be [N] and [N, C]")
    if y.size == 0:
        return math.nan
    true_score = s[np.arange(len(y)), y][:, None]
    above = (s > true_score).sum(axis=1)
    tied_before = ((s == true_score) & (np.arange(s.shape[1])[None, :] > y[:, None])).sum(axis=1)
    return float(np.mean(above + tied_before < k))


def primary_metric(task_type: str) -> str:
    """The metric a run is judged on: 'auc' (multi-label) or 'top1' (multi-class)."""
    _check_task(task_type)
    return "auc" if task_type == "multilabel" else "top1"


def compute_metrics(task_type: str, targets, scores) -> dict:
    """All evaluation metrics of one prediction table. `targets`: multi-hot [N, C] (multilabel) or
    class indices [N] (multiclass); `scores`: [N, C] logits or probabilities (only the order counts)."""
    _check_task(task_type)
    if task_type == "multilabel":
        auc, n_scored = macro_auc(targets, scores)
        return {
            "auc": auc,
            "auc_classes": n_scored,
            "f1_25": f1_at_k(targets, scores, 25),
            "recall_25": recall_at_k(targets, scores, 25),
        }
    return {"top1": topk_accuracy(targets, scores, 1), "top5": topk_accuracy(targets, scores, 5)}


def mean_loss(task_type: str, targets, logits) -> float:
    """Mean training loss of a prediction table: BCE-with-logits over all entries (multilabel) or
    cross-entropy over samples (multiclass). Used as attribution's additive `global` target."""
    _check_task(task_type)
    z = torch.as_tensor(_np(logits), dtype=torch.float64)
    t = torch.as_tensor(_np(targets))
    if task_type == "multilabel":
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, t.to(torch.float64))
    else:
        loss = torch.nn.functional.cross_entropy(z, t.to(torch.int64).reshape(-1))
    return float(loss)


def _check_task(task_type: str) -> None:
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown task type {task_type!r}; expected one of {', '.join(TASK_TYPES)}")
