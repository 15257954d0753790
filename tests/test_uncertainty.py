"""Standard errors of the monitor's metrics: exact against DeLong's formula, and calibrated (coverage)."""

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from miam_cli.scoring.metrics import macro_auc, topk_accuracy
from miam_cli.scoring.uncertainty import (
    auc_influence, metric_influence, paired_standard_error, standard_error, top1_influence,
)


def delong_variance(y: np.ndarray, s: np.ndarray) -> float:
    """DeLong et al. (1988), written out pairwise (O(m n)): S10/m + S01/n."""
    pos, neg = s[y], s[~y]
    h = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = h.mean(axis=1), h.mean(axis=0)
    return v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)


def test_single_class_matches_delong_and_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.random(120) < 0.3
    s = np.round(rng.normal(size=120) + y, 1)  # rounded: many ties
    auc, psi, k = auc_influence(y[:, None], s[:, None])
    assert k == 1
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert standard_error(psi) ** 2 == pytest.approx(delong_variance(y, s), rel=1e-10)


def test_macro_auc_value_equals_metrics_and_skips_one_outcome_classes():
    rng = np.random.default_rng(1)
    y = rng.random((80, 6)) < 0.25
    y[:, 2] = False  # no positive: not scored
    y[:, 4] = False
    y[7, 4] = True  # a single positive is scored (as macro_auc does) and adds no variance of its own
    s = rng.normal(size=(80, 6)) + y
    auc, psi, k = auc_influence(y, s)
    ref, n_ref = macro_auc(y, s)
    assert (auc, k) == (pytest.approx(ref, abs=1e-12), n_ref) and k == 5
    assert np.isfinite(psi).all() and standard_error(psi) > 0


def _correlated_task(rng, n, mus, prev):
    """Binormal classes sharing a latent: per-class AUC is Φ(μ/√2), the classes' errors correlate."""
    z = rng.standard_normal((n, 1))
    y = rng.random((n, len(mus))) < prev
    s = mus * y + 0.7 * z + np.sqrt(1 - 0.49) * rng.standard_normal((n, len(mus)))
    return y, s


def test_macro_auc_standard_error_covers_the_truth():
    """95% intervals from the SE cover the population macro AUC ~95% of the time (classes correlated)."""
    rng = np.random.default_rng(2)
    mus, prev = np.array([0.5, 0.8, 1.0, 1.3, 0.3]), np.array([0.1, 0.2, 0.3, 0.15, 0.4])
    truth = norm.cdf(mus / np.sqrt(2)).mean()
    hits, z = [], []
    for _ in range(600):
        y, s = _correlated_task(rng, 300, mus, prev)
        auc, psi, _ = auc_influence(y, s)
        se = standard_error(psi)
        hits.append(abs(auc - truth) < 1.96 * se)
        z.append((auc - truth) / se)
    assert 0.93 <= np.mean(hits) <= 0.97
    assert 0.9 <= np.std(z) <= 1.1


def test_paired_difference_standard_error_covers_the_truth():
    """Two scorers on the same samples: the SE of their AUC difference is calibrated, and much smaller
    than the unpaired sqrt(se_a² + se_b²) because the scorers share most of their errors."""
    rng = np.random.default_rng(3)
    mus_a, mus_b = np.array([0.8, 1.0, 0.6]), np.array([0.9, 1.1, 0.6])
    prev = np.array([0.2, 0.3, 0.25])
    truth = norm.cdf(mus_b / np.sqrt(2)).mean() - norm.cdf(mus_a / np.sqrt(2)).mean()
    hits, ratio = [], []
    for _ in range(600):
        n = 400
        y = rng.random((n, 3)) < prev
        common = rng.standard_normal((n, 3))
        s_a = mus_a * y + 0.9 * common + np.sqrt(1 - 0.81) * rng.standard_normal((n, 3))
        s_b = mus_b * y + 0.9 * common + np.sqrt(1 - 0.81) * rng.standard_normal((n, 3))
        a, psi_a, _ = auc_influence(y, s_a)
        b, psi_b, _ = auc_influence(y, s_b)
        se = paired_standard_error(psi_b, psi_a)
        hits.append(abs((b - a) - truth) < 1.96 * se)
        ratio.append(se / np.hypot(standard_error(psi_a), standard_error(psi_b)))
    assert 0.93 <= np.mean(hits) <= 0.97
    assert np.mean(ratio) < 0.7


def test_top1_standard_error_is_binomial_and_covers():
    rng = np.random.default_rng(4)
    truth = quad(lambda x: norm.pdf(x - 1.0) * norm.cdf(x) ** 3, -10, 10)[0]  # N(1,1) beats 3 N(0,1)
    hits = []
    for _ in range(600):
        labels = rng.integers(0, 4, size=250)
        scores = rng.normal(size=(250, 4))
        scores[np.arange(250), labels] += 1.0
        acc, psi = top1_influence(labels, scores)
        assert acc == pytest.approx(topk_accuracy(labels, scores, 1))
        se = standard_error(psi)
        assert se == pytest.approx(np.sqrt(acc * (1 - acc) / 249), rel=1e-9)
        hits.append(abs(acc - truth) < 1.96 * se)
    assert 0.93 <= np.mean(hits) <= 0.97


def test_metric_influence_dispatches_on_task_and_refuses_mismatched_pairs():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=float)
    s = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.6], [0.1, 0.3]])
    assert metric_influence("multilabel", y, s)[0] == pytest.approx(1.0)
    acc, psi = metric_influence("multiclass", np.array([0, 1, 1, 1]), s)
    assert acc == pytest.approx(0.75) and psi.shape == (4,)
    with pytest.raises(ValueError, match="same samples"):
        paired_standard_error(np.zeros(3), np.zeros(4))
