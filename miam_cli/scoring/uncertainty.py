"""Standard errors of the evaluation metrics, from each sample's influence on the metric.

A metric computed on n validation samples is an estimate; how far it would move on another draw of
n samples is its standard error. Both metrics the imbalance monitor uses are (asymptotically) means
of per-sample contributions, so one vector per evaluation carries everything:

    metric ≈ population value + Σ_i ψ_i,        SE = sqrt(Σ_i ψ_i²)

- **AUC of one class** (DeLong et al. 1988). With m positives and n negatives, a positive's placement
  V10(i) is the fraction of negatives it outscores (ties ½), a negative's V01(j) the fraction of
  positives that outscore it; AUC is the mean of either. DeLong's variance S10/m + S01/n is Σ ψ² with
  ψ_i = (V10(i) − AUC)/sqrt(m(m−1)) for positives and (V01(j) − AUC)/sqrt(n(n−1)) for negatives.
- **Macro AUC** is the mean over the C' scored classes, so ψ_i is the mean of its per-class ψ. The
  classes share samples; summing per-sample influences first keeps their covariance (summing
  per-class variances would not).
- **Top-1 accuracy**: ψ_i = (correct_i − acc)/sqrt(N(N−1)), the binomial standard error.

Two evaluations of *different models on the same samples* (the monitor's s_m at two epochs) are
correlated: their difference has SE sqrt(Σ_i (ψ_i − ψ'_i)²) (DeLong's test for two correlated ROC
curves). That is the noise a learning speed d_m = |Δs_m| has to rise above.
"""

from __future__ import annotations

import math

import numpy as np

from miam_cli.scoring.metrics import _np, _scores_2d, primary_metric, tie_groups

# Columns processed at once: bounds memory for many classes (about ten [N, 256] float64 arrays).
_BLOCK = 256


def auc_influence(y_true, scores) -> tuple[float, np.ndarray, int]:
    """(macro AUC over classes with both outcomes, influence ψ [N], number of such classes).

    The AUC equals `metrics.macro_auc`; (NaN, zeros, 0) when no class has both outcomes.
    """
    y, s = _scores_2d(y_true, scores)
    n_samples = y.shape[0]
    n_pos = y.sum(axis=0).astype(np.float64)
    n_neg = n_samples - n_pos
    scored = np.flatnonzero((n_pos > 0) & (n_neg > 0))  # as metrics.macro_auc
    psi = np.zeros(n_samples, dtype=np.float64)
    if scored.size == 0:
        return math.nan, psi, 0
    aucs = []
    for lo in range(0, len(scored), _BLOCK):
        cols = scored[lo:lo + _BLOCK]
        auc, contrib = _placements(y[:, cols], s[:, cols], n_pos[cols], n_neg[cols])
        aucs.append(auc)
        psi += contrib.sum(axis=1)
    auc_all = np.concatenate(aucs)
    return float(auc_all.mean()), psi / len(scored), int(len(scored))


def _placements(y: np.ndarray, s: np.ndarray, m: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class AUC [c] and each sample's DeLong influence [N, c], with one sort per column.

    In each column's sorted order, a tie group [start, end] is scored at once: a positive's placement
    counts the negatives below its group plus half of those inside it; a negative's, the positives
    above its group plus half of those inside it.
    """
    order, start, end = tie_groups(s)
    yo = np.take_along_axis(y, order, axis=0)
    zero = np.zeros((1, s.shape[1]))
    neg_before = np.concatenate([zero, np.cumsum(~yo, axis=0)])  # negatives among the first i sorted
    pos_before = np.concatenate([zero, np.cumsum(yo, axis=0)])
    take = lambda a, idx: np.take_along_axis(a, idx, axis=0)  # noqa: E731
    neg_below, neg_tied = take(neg_before, start), take(neg_before, end + 1) - take(neg_before, start)
    pos_below, pos_tied = take(pos_before, start), take(pos_before, end + 1) - take(pos_before, start)
    v10 = (neg_below + 0.5 * neg_tied) / n  # a positive: share of negatives it outscores
    v01 = (m - pos_below - 0.5 * pos_tied) / m  # a negative: share of positives that outscore it
    auc = np.where(yo, v10, 0.0).sum(axis=0) / m
    # a lone positive (or negative) has v10 == auc exactly: its term is 0 whatever the denominator
    contrib_sorted = np.where(yo, (v10 - auc) / np.sqrt(np.maximum(m * (m - 1), 1.0)),
                              (v01 - auc) / np.sqrt(np.maximum(n * (n - 1), 1.0)))
    contrib = np.empty_like(contrib_sorted)
    np.put_along_axis(contrib, order, contrib_sorted, axis=0)
    return auc, contrib


def top1_influence(labels, scores) -> tuple[float, np.ndarray]:
    """(top-1 accuracy, influence ψ [N]); ties broken as `metrics.topk_accuracy` (higher index first)."""
    y = _np(labels).astype(np.int64).reshape(-1)
    s = _np(scores).astype(np.float64, copy=False)
    n = len(y)
    if n == 0:
        return math.nan, np.zeros(0)
    true_score = s[np.arange(n), y][:, None]
    above = (s > true_score).sum(axis=1)
    tied_before = ((s == true_score) & (np.arange(s.shape[1])[None, :] > y[:, None])).sum(axis=1)
    correct = (above + tied_before < 1).astype(np.float64)
    acc = float(correct.mean())
    return acc, (correct - acc) / math.sqrt(n * max(n - 1, 1))


def metric_influence(task_type: str, targets, scores) -> tuple[float, np.ndarray]:
    """The task's primary metric (macro AUC or top-1) and each sample's influence on it."""
    if primary_metric(task_type) == "auc":
        value, psi, _ = auc_influence(targets, scores)
        return value, psi
    return top1_influence(targets, scores)


def standard_error(psi: np.ndarray) -> float:
    """SE of the metric whose influence vector is `psi`."""
    return float(np.sqrt(np.sum(np.square(psi, dtype=np.float64))))


def paired_standard_error(psi_a: np.ndarray, psi_b: np.ndarray) -> float:
    """SE of the difference of two metrics computed on the same samples (influences ψ_a, ψ_b)."""
    a, b = np.asarray(psi_a, dtype=np.float64), np.asarray(psi_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"influence vectors must cover the same samples: {a.shape} vs {b.shape}")
    return float(np.sqrt(np.sum(np.square(a - b))))
