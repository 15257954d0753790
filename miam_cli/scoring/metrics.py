"""Evaluation metrics (numpy only at run time; sklearn is used by the tests as the reference).

Which metrics a task reports is decided once, here, by `metric_set(task, num_classes)`:

- one class (presence/background, `labels.binary`): AUC, average precision (AUPRC) and the true
  skill statistic (TSS, at the threshold that maximises it), the species-distribution field's trio.
  Top-k metrics are left out: with one class every top-k set holds it, so recall@k is always 1.
- several classes, multi-label: macro AUC over the classes that have both outcomes in the split,
  sample-averaged F1 at top-k and recall@k with k = C // 4 clipped to 1..25 (GeoLifeCLEF's k = 25
  from 100 classes on). A fixed k = 25 on 25 classes or fewer predicts every class, which makes
  recall@k 1 and F1@k the prevalence for every model.
- multi-class: top-1, and top-5 when there are more than 5 classes (otherwise it is always 1).

Inputs may be numpy arrays or torch tensors.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

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


def _binary_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Cumulative (true positives, false positives) at each distinct score, highest first; and the
    numbers of positives and negatives. Tied scores share one threshold, as in sklearn's curves."""
    y = _np(y_true).reshape(-1) > 0.5
    s = _np(scores).reshape(-1).astype(np.float64)
    if y.shape != s.shape:
        raise ValueError(f"y_true {y.shape} and scores {s.shape} must have the same length")
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # the end of each tie group
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return tp, fp, int(y.sum()), int((~y).sum())


def average_precision(y_true, scores) -> float:
    """Area under the precision-recall curve as a step sum, sum_n (R_n - R_{n-1}) P_n over the
    distinct thresholds (= sklearn's average_precision_score). NaN without positives."""
    tp, fp, pos, _ = _binary_curve(y_true, scores)
    if pos == 0:
        return math.nan
    precision = tp / (tp + fp)
    recall_step = np.diff(np.r_[0, tp]) / pos
    return float(np.sum(recall_step * precision))


def max_tss(y_true, scores) -> float:
    """The true skill statistic (sensitivity + specificity - 1) at the threshold that maximises it
    on these scores (maxTSS, as SDM studies report it). NaN without both outcomes."""
    tp, fp, pos, neg = _binary_curve(y_true, scores)
    if pos == 0 or neg == 0:
        return math.nan
    return float(max(0.0, np.max(tp / pos - fp / neg)))


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


def primary_value(task_type: str, targets, scores) -> float:
    """The primary metric alone (`compute_metrics(...)[primary_metric(task_type)]` without the others)."""
    if primary_metric(task_type) == "auc":
        return macro_auc(targets, scores)[0]
    return topk_accuracy(targets, scores, 1)


GLC_K = 25  # GeoLifeCLEF's top-k for multi-label species lists


@dataclass(frozen=True)
class MetricSet:
    """The metrics one task reports: column names (the primary one first) and how to compute them."""

    task: str
    num_classes: int
    k: int | None  # the top-k of F1@k / recall@k (multi-label), None when they are left out

    @property
    def names(self) -> list[str]:
        if self.task == "multiclass":
            return ["top1", "top5"] if self.num_classes > 5 else ["top1"]
        if self.num_classes == 1:
            return ["auc", "auprc", "tss"]
        return ["auc", "auc_classes", f"f1_{self.k}", f"recall_{self.k}"]

    @property
    def primary(self) -> str:
        return primary_metric(self.task)

    def describe(self) -> str:
        """One line saying which metrics are reported and why (printed under eval tables)."""
        if self.task == "multiclass":
            return "top-1 accuracy" + (", top-5" if self.num_classes > 5 else f" (top-5 left out: {self.num_classes} classes)")
        if self.num_classes == 1:
            return "one class: AUC, average precision (AUPRC) and maxTSS; top-k metrics left out (one class is always in the top k)"
        return f"macro AUC over the classes with both outcomes; F1@{self.k} and recall@{self.k} (k = {self.num_classes} classes // 4, clipped to 1..{GLC_K})"

    def compute(self, targets, scores) -> dict:
        if self.task == "multiclass":
            return {f"top{k}": topk_accuracy(targets, scores, k) for k in ((1, 5) if self.num_classes > 5 else (1,))}
        if self.num_classes == 1:
            auc, _ = macro_auc(targets, scores)
            return {"auc": auc, "auprc": average_precision(targets, scores), "tss": max_tss(targets, scores)}
        auc, n_scored = macro_auc(targets, scores)
        return {"auc": auc, "auc_classes": n_scored, f"f1_{self.k}": f1_at_k(targets, scores, self.k),
                f"recall_{self.k}": recall_at_k(targets, scores, self.k)}


def metric_set(task_type: str, num_classes: int) -> MetricSet:
    _check_task(task_type)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    k = min(GLC_K, max(1, num_classes // 4)) if task_type == "multilabel" and num_classes > 1 else None
    return MetricSet(task_type, int(num_classes), k)


_METRIC_COLUMN = re.compile(r"^(auc|auc_classes|auprc|tss|f1_\d+|recall_\d+|top\d+)$")


def metric_names(columns) -> list[str]:
    """The metric columns of a table (e.g. eval/subsets.csv), in their order."""
    return [c for c in columns if _METRIC_COLUMN.match(str(c))]


def compute_metrics(task_type: str, targets, scores) -> dict:
    """All evaluation metrics of one prediction table (the task's `metric_set`). `targets`: multi-hot
    [N, C] (multilabel) or class indices [N] (multiclass); `scores`: [N, C] logits or probabilities
    (only the order counts)."""
    return metric_set(task_type, _np(scores).shape[1]).compute(targets, scores)


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
