"""Metrics agree with sklearn (the reference, test-only) and handle the degenerate splits."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score, roc_curve, top_k_accuracy_score

from miam_cli.scoring.metrics import (
    average_precision,
    compute_metrics,
    f1_at_k,
    macro_auc,
    max_tss,
    mean_loss,
    metric_names,
    metric_set,
    primary_metric,
    recall_at_k,
    topk_accuracy,
)


def _multilabel(seed, n=300, c=40):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < rng.uniform(0.02, 0.4, c)).astype(np.float32)
    s = rng.normal(size=(n, c)) + y  # informative scores
    s[:, :5] = np.round(s[:, :5])  # heavy ties in some columns
    s[:, 5] = 0.5  # all tied
    y[:, 6] = 0  # constant column: no positive -> not scored
    y[:, 7] = 1  # constant column: no negative -> not scored
    return y, s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_auc_matches_sklearn(seed):
    y, s = _multilabel(seed)
    both = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    want = np.mean([roc_auc_score(y[:, j], s[:, j]) for j in both])
    auc, n = macro_auc(y, s)
    assert n == len(both) == y.shape[1] - 2
    assert auc == pytest.approx(want, abs=1e-12)


def test_macro_auc_many_columns_in_blocks_and_torch_input():
    # More columns than one rank block; torch tensors accepted.
    y, s = _multilabel(3, n=120, c=600)
    both = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    want = np.mean([roc_auc_score(y[:, j], s[:, j]) for j in both])
    auc, n = macro_auc(torch.from_numpy(y), torch.from_numpy(s))
    assert (auc, n) == (pytest.approx(want, abs=1e-12), len(both))


def test_macro_auc_no_scored_class():
    y = np.zeros((10, 3))
    y[:, 1] = 1
    auc, n = macro_auc(y, np.random.default_rng(0).normal(size=(10, 3)))
    assert math.isnan(auc) and n == 0
    auc, n = macro_auc(np.zeros((0, 3)), np.zeros((0, 3)))
    assert math.isnan(auc) and n == 0


def _topk_indicator(s, k):
    ind = np.zeros(s.shape, dtype=int)
    np.put_along_axis(ind, np.argsort(-s, axis=1)[:, :k], 1, axis=1)
    return ind


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 5, 25, 100])
def test_f1_at_k_matches_sklearn(seed, k):
    y, s = _multilabel(seed)
    s = np.random.default_rng(seed + 10).normal(size=s.shape) + y  # no ties: top-k is unique
    y[:3] = 0  # samples without positives count as F1 = 0
    want = f1_score(y.astype(int), _topk_indicator(s, min(k, y.shape[1])), average="samples", zero_division=0)
    assert f1_at_k(y, s, k) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_recall_at_k(seed):
    y, s = _multilabel(seed)
    s = np.random.default_rng(seed + 10).normal(size=s.shape) + y
    y[:4] = 0  # excluded from the mean
    pred = _topk_indicator(s, 10).astype(bool)
    keep = y.sum(1) > 0
    want = np.mean(((pred & (y > 0)).sum(1) / np.maximum(y.sum(1), 1))[keep])
    assert recall_at_k(y, s, 10) == pytest.approx(want, abs=1e-12)
    assert recall_at_k(y, s, 10_000) == 1.0  # k capped at C
    assert math.isnan(recall_at_k(np.zeros((5, 4)), np.zeros((5, 4))))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 5])
def test_topk_accuracy_matches_sklearn(seed, k):
    rng = np.random.default_rng(seed)
    n, c = 400, 30
    labels = rng.integers(0, c, n)
    s = rng.normal(size=(n, c))
    s[np.arange(n), labels] += 1.0
    if seed == 2:
        s = np.round(s)  # ties, broken as sklearn breaks them
    want = top_k_accuracy_score(labels, s, k=k, labels=np.arange(c))
    assert topk_accuracy(labels, s, k) == pytest.approx(want, abs=1e-12)


def test_compute_metrics_keys_and_primary():
    y, s = _multilabel(0)  # 40 classes: k = 40 // 4
    m = compute_metrics("multilabel", y, s)
    assert set(m) == {"auc", "auc_classes", "f1_10", "recall_10"} and m["auc_classes"] == 38
    y, s = _multilabel(0, c=400)  # GeoLifeCLEF's k = 25 from 100 classes on
    assert set(compute_metrics("multilabel", y, s)) == {"auc", "auc_classes", "f1_25", "recall_25"}
    labels = np.arange(20) % 7
    m = compute_metrics("multiclass", labels, np.eye(7)[labels])
    assert m == {"top1": 1.0, "top5": 1.0}
    labels = np.arange(20) % 4  # 4 classes: top-5 always 1, left out
    assert compute_metrics("multiclass", labels, np.eye(4)[labels]) == {"top1": 1.0}
    assert primary_metric("multilabel") == "auc" and primary_metric("multiclass") == "top1"
    with pytest.raises(ValueError):
        primary_metric("regression")


def test_mean_loss():
    z = torch.randn(8, 5)
    t = (torch.rand(8, 5) < 0.3).float()
    want = torch.nn.functional.binary_cross_entropy_with_logits(z, t).item()
    assert mean_loss("multilabel", t, z) == pytest.approx(want, rel=1e-6)
    labels = torch.randint(0, 5, (8,))
    want = torch.nn.functional.cross_entropy(z, labels).item()
    assert mean_loss("multiclass", labels.numpy(), z.numpy()) == pytest.approx(want, rel=1e-6)


def _binary(seed, n=500, ties=False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(np.float32)
    s = rng.normal(size=n) + 1.2 * y
    return y, (np.round(s * 2) / 2 if ties else s)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("ties", [False, True])
def test_binary_metrics_match_sklearn(seed, ties):
    y, s = _binary(seed, ties=ties)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, s)
    assert max_tss(y, s) == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    m = compute_metrics("multilabel", y[:, None], s[:, None])
    assert list(m) == ["auc", "auprc", "tss"]
    assert m["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert math.isnan(average_precision(np.zeros(5), np.arange(5.0))) and math.isnan(max_tss(np.ones(5), np.arange(5.0)))


def test_topk_metrics_are_not_constant_with_few_classes():
    """The bug: on <= 25 classes, top-25 predicts every class, so recall@25 = 1 and F1@25 = the
    prevalence for any scores. With k relative to the class count, a better model scores higher."""
    rng = np.random.default_rng(0)
    y = (rng.random((400, 16)) < 0.2).astype(np.float32)
    good, bad = y + 0.5 * rng.normal(size=y.shape), rng.normal(size=y.shape)
    assert recall_at_k(y, good, 25) == recall_at_k(y, bad, 25) == 1.0  # what used to be reported
    ms = metric_set("multilabel", 16)
    assert ms.k == 4 and ms.names == ["auc", "auc_classes", "f1_4", "recall_4"]
    g, b = ms.compute(y, good), ms.compute(y, bad)
    assert g["recall_4"] > b["recall_4"] + 0.2 and g["f1_4"] > b["f1_4"] + 0.1
    assert metric_set("multilabel", 3).k == 1 and metric_set("multilabel", 100).k == 25 and metric_set("multilabel", 5000).k == 25
    assert "k = 16 classes // 4" in ms.describe()


def test_metric_names_and_sets():
    assert metric_names(["subset", "auc", "auc_classes", "f1_4", "recall_4", "visible_tokens", "top1", "tss"]) == [
        "auc", "auc_classes", "f1_4", "recall_4", "top1", "tss"]
    one = metric_set("multilabel", 1)
    assert one.names == ["auc", "auprc", "tss"] and one.primary == "auc" and "top-k metrics left out" in one.describe()
    assert metric_set("multiclass", 6).names == ["top1", "top5"] and metric_set("multiclass", 2).names == ["top1"]
    with pytest.raises(ValueError):
        metric_set("multilabel", 0)


def test_small_standard_errors_print_with_significant_digits():
    """The bug: a standard error of 2e-5 printed as 0.0000 (tables) and a spread of 0.02 points as 0.0."""
    from miam_cli.cli.common import _cell
    from miam_cli.evaluate.compare import format_cell

    assert _cell(2e-5) == "2e-05" and _cell(-3.14159e-4) == "-0.000314"
    assert _cell(0.0) == "0.0000" and _cell(0.12345) == "0.1235" and _cell(12345.6) == "1.235e+04"
    assert format_cell(0.8123, 0.0002, False, False) == "81.2 ± 0.02"
    assert format_cell(0.8123, 0.0123, False, False) == "81.2 ± 1.2"
