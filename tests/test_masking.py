"""Masking strategies, keep masks and the imbalance monitor, checked against closed forms.

Statistical checks use fixed seeds and tolerances of several standard errors, so they are
deterministic and not flaky.
"""

import io
import math
import time

import numpy as np
import pytest
import torch

from miam_cli.errors import UserError
from miam_cli.masking.keep import build_keep, mean_mask_rate
from miam_cli.masking.monitor import ImbalanceMonitor, plot_imbalance
from miam_cli.masking.strategies import STRATEGIES, make_strategy, sample_corners

N = 200_000


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def close(x: torch.Tensor | float, expected: float, sd: float, n: int, z: float = 5.0) -> bool:
    """|x − expected| within z standard errors of a mean of n draws with standard deviation sd."""
    return abs(float(x) - expected) <= z * sd / math.sqrt(n)


def roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# --- registry, interface -------------------------------------------------------------------------


def test_registry_has_the_eight_strategies_with_their_flags():
    assert set(STRATEGIES) == {
        "constant", "uniform", "dirichlet", "dropout", "opm", "uniform-cube", "beta-cube", "miam"
    }
    for name in STRATEGIES:
        s = make_strategy(name, 3)
        assert s.name == name and s.num_modalities == 3
        assert s.is_adaptive == (name in {"miam", "opm"})
        assert s.corner_only == (name in {"dropout", "opm"})
        assert s.partial_masking == (not s.corner_only)
        p = s.sample(17, gen())
        assert p.shape == (17, 3) and p.dtype == torch.float32
        assert ((p >= 0) & (p <= 1)).all()


def test_unknown_name_raises_user_error_listing_valid_names():
    with pytest.raises(UserError) as err:
        make_strategy("miaam", 3)
    for name in STRATEGIES:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "name, params, fragment",
    [
        ("miam", {"kappa": -1}, "kappa"),
        ("miam", {"lam": -0.5}, "lam"),
        ("beta-cube", {"w0": 0.7, "w1": 0.6}, "w0 + masking.w1"),
        ("dropout", {"q": 1.0}, "q"),
        ("constant", {"value": 1.5}, "value"),
        ("dirichlet", {"alpha": 0}, "alpha"),
        ("dirichlet", {"alpha": "1"}, "alpha"),
        ("uniform", {"kappa": 3}, "no parameter"),
        ("miam", {"q": 0.5}, "accepted: kappa, lam, w0, w1"),
    ],
)
def test_bad_params_raise_user_error(name, params, fragment):
    with pytest.raises(UserError) as err:
        make_strategy(name, 3, **params)
    assert fragment in str(err.value)


def test_bad_number_of_modalities_raises_user_error():
    with pytest.raises(UserError):
        make_strategy("miam", 0)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_same_seed_same_draws(name):
    a, b = make_strategy(name, 4), make_strategy(name, 4)
    if a.is_adaptive:  # exercise the adaptive path too
        for s in (a, b):
            s.update(ratios=torch.tensor([3.0, 1.0, 0.5, 2.0]), scores=torch.tensor([0.9, 0.5, 0.4, 0.7]))
    assert torch.equal(a.sample(500, gen(7)), b.sample(500, gen(7)))
    assert not torch.equal(a.sample(500, gen(7)), a.sample(500, gen(8))) or a.name == "constant"


# --- simple strategies ---------------------------------------------------------------------------


def test_constant():
    p = make_strategy("constant", 3).sample(5, gen())
    assert torch.all(p == 0.75)
    assert torch.all(make_strategy("constant", 2, value=0.3).sample(4, gen()) == 0.3)


def test_uniform_shares_one_p_across_modalities():
    p = make_strategy("uniform", 4).sample(N, gen())
    assert torch.equal(p, p[:, :1].expand_as(p))
    assert close(p[:, 0].mean(), 0.5, math.sqrt(1 / 12), N)


def test_uniform_cube_is_independent_uniform():
    p = make_strategy("uniform-cube", 3).sample(N, gen()).double()
    for m in range(3):
        assert close(p[:, m].mean(), 0.5, math.sqrt(1 / 12), N)
    corr = torch.corrcoef(p.T)[0, 1]
    assert abs(float(corr)) < 5 / math.sqrt(N)


# --- dirichlet -----------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 0.5, 3.0])
def test_dirichlet_keep_fractions(alpha):
    m = 3
    p = make_strategy("dirichlet", m, alpha=alpha).sample(N, gen()).double()
    keep = 1 - p
    assert torch.allclose(keep.sum(dim=1), torch.ones(N, dtype=torch.float64), atol=1e-5)
    # marginal keep fraction ~ Beta(α, (M−1)α): mean 1/M, variance below
    a0 = m * alpha
    var = alpha * (a0 - alpha) / (a0**2 * (a0 + 1))
    for j in range(m):
        assert close(p[:, j].mean(), 1 - 1 / m, math.sqrt(var), N)
        assert abs(float(keep[:, j].var()) - var) < 0.03 * var


# --- corner-only strategies ----------------------------------------------------------------------


def test_dropout_corners_only_never_all_masked():
    q, m = 0.5, 3
    p = make_strategy("dropout", m, q=q).sample(N, gen())
    assert torch.all((p == 0) | (p == 1))
    assert torch.all(p.sum(dim=1) < m)
    # conditioned on "not all masked": P(c_m = 1) = q(1 − q^(M−1)) / (1 − q^M)
    rate = q * (1 - q ** (m - 1)) / (1 - q**m)
    for j in range(m):
        assert close(p[:, j].mean(), rate, math.sqrt(rate * (1 - rate)), N)


def test_dropout_single_modality_is_never_masked():
    assert torch.all(make_strategy("dropout", 1, q=0.9).sample(1000, gen()) == 0)


def test_opm_before_scores_never_drops():
    assert torch.all(make_strategy("opm", 3).sample(1000, gen()) == 0)


def test_opm_drops_dominant_at_formula_rate_and_never_dominated():
    opm = make_strategy("opm", 3)
    s = [0.9, 0.5, 0.3]
    opm.update(scores=torch.tensor(s))
    p = opm.sample(N, gen())
    assert torch.all((p == 0) | (p == 1))
    c = [sum(s[i] / s[j] for j in range(3) if j != i) / 2 for i in range(3)]  # [2.4, 1.11, 0.43]
    assert c[2] <= 1 and c[0] > 1 and c[1] > 1
    assert torch.all(p[:, 2] == 0)  # dominated: never dropped (so no all-masked redraws happen)
    for i in (0, 1):
        rate = 0.5 * (1 + 0.5 * math.tanh(c[i] - 1))
        assert close(p[:, i].mean(), rate, math.sqrt(rate * (1 - rate)), N)


def test_opm_handles_non_positive_scores():
    opm = make_strategy("opm", 3)
    opm.update(scores=[0.0, -0.2, 0.5])
    p = opm.sample(1000, gen())
    assert torch.all(p.sum(dim=1) < 3)
    assert torch.all(p[:, :2] == 0)  # the floored ones are dominated


# --- MixProdBeta (beta-cube, miam) ---------------------------------------------------------------


@pytest.mark.parametrize("kappa", [10.0, 3.0])
def test_beta_corner_means_match_closed_forms(kappa):
    n, m = N // 3, 3
    lo = make_strategy("beta-cube", m, kappa=kappa, w0=1.0, w1=0.0).sample(n, gen()).double()
    hi = make_strategy("beta-cube", m, kappa=kappa, w0=0.0, w1=1.0).sample(n, gen()).double()
    sd = math.sqrt(kappa / ((1 + kappa) ** 2 * (2 + kappa)))  # sd of Beta(1,κ) and Beta(κ,1)
    assert close(lo.mean(), 1 / (1 + kappa), sd, n * m)
    assert close(hi.mean(), kappa / (1 + kappa), sd, n * m)


def test_corner_frequencies_m3():
    c = sample_corners(N, 3, 0.25, 0.25, gen())
    code = (c.long() * torch.tensor([4, 2, 1])).sum(dim=1)
    freq = torch.bincount(code, minlength=8).double() / N
    expected = [0.25] + [0.5 / 6] * 6 + [0.25]
    for f, e in zip(freq.tolist(), expected):
        assert close(f, e, math.sqrt(e * (1 - e)), N)


def test_corner_weights_configurable_and_single_modality():
    c = sample_corners(N, 4, 0.1, 0.6, gen())
    assert close(c.all(dim=1).double().mean(), 0.6, math.sqrt(0.24), N)
    assert close((~c.any(dim=1)).double().mean(), 0.1, math.sqrt(0.09), N)
    one = sample_corners(N, 1, 0.25, 0.25, gen())  # no other corners: weights renormalised
    assert close(one.double().mean(), 0.5, 0.5, N)


def test_miam_masks_high_ratio_modality_more_with_closed_form_means():
    kappa, lam = 10.0, 1.0
    r = [4.0, 1.0, 0.25]
    miam = make_strategy("miam", 3, kappa=kappa, lam=lam)
    miam.update(ratios=torch.tensor(r))
    p = miam.sample(N, gen()).double()
    means = p.mean(dim=0)
    assert means[0] > means[1] > means[2]
    for j, rj in enumerate(r):
        a, b = kappa * rj**lam, kappa * rj**-lam
        # half the corner mass has c_m = 0 (w0 + half the mixed corners), half c_m = 1
        expected = 0.5 / (1 + b) + 0.5 * a / (1 + a)
        assert close(means[j], expected, 0.5, N)


def test_miam_lambda_zero_equals_beta_cube():
    miam = make_strategy("miam", 5, lam=0.0)
    miam.update(ratios=torch.tensor([10.0, 0.1, 3.0, 1.0, 0.5]))
    cube = make_strategy("beta-cube", 5)
    assert torch.equal(miam.sample(4096, gen(3)), cube.sample(4096, gen(3)))


def test_miam_update_validates_ratios():
    miam = make_strategy("miam", 3)
    with pytest.raises(ValueError):
        miam.update(ratios=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError):
        miam.update(ratios=torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError):
        miam.update(scores=torch.tensor([1.0, 1.0, 1.0]))


def test_m64_is_fast_and_keeps_corner_weights():
    s = make_strategy("miam", 64)
    s.update(ratios=torch.linspace(0.5, 2.0, 64))
    start = time.perf_counter()
    p = s.sample(1024, gen())
    assert time.perf_counter() - start < 0.5
    assert p.shape == (1024, 64) and torch.isfinite(p).all()
    c = sample_corners(20_000, 64, 0.25, 0.25, gen())
    assert close(c.all(dim=1).double().mean(), 0.25, math.sqrt(0.1875), 20_000)
    assert close((~c.any(dim=1)).double().mean(), 0.25, math.sqrt(0.1875), 20_000)


# --- state dicts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["miam", "opm", "beta-cube", "dirichlet"])
def test_strategy_state_dict_round_trip_continues_identically(name):
    a = make_strategy(name, 3)
    a.update(ratios=torch.tensor([2.0, 1.0, 0.5]), scores=torch.tensor([0.8, 0.6, 0.4]))
    g = gen(11)
    a.sample(100, g)
    state, rng = roundtrip(a.state_dict()), g.get_state()
    b = make_strategy(name, 3)
    b.load_state_dict(state)
    g2 = torch.Generator()
    g2.set_state(rng)
    assert torch.equal(a.sample(300, g), b.sample(300, g2))


def test_load_state_of_other_strategy_raises():
    with pytest.raises(UserError):
        make_strategy("miam", 3).load_state_dict(make_strategy("opm", 3).state_dict())


# --- build_keep ----------------------------------------------------------------------------------


def test_build_keep_rates_and_validity():
    b, per = 4000, 50
    token_group = torch.arange(3).repeat_interleave(per)
    p = torch.tensor([0.2, 0.5, 0.8]).expand(b, 3)
    valid = torch.rand(b, 3 * per, generator=gen(1)) < 0.9
    keep = build_keep(p, valid, token_group, gen(2))
    assert keep.dtype == torch.bool and keep.shape == valid.shape
    assert not (keep & ~valid).any()
    for m, pm in enumerate([0.2, 0.5, 0.8]):
        cols = token_group == m
        rate = keep[:, cols][valid[:, cols]].double().mean()
        n = int(valid[:, cols].sum())
        assert close(rate, 1 - pm, math.sqrt(pm * (1 - pm)), n)


def test_build_keep_keeps_one_uniformly_chosen_valid_token():
    b, t = 30_000, 8
    valid = torch.zeros(b, t, dtype=torch.bool)
    valid[:, [2, 5, 7]] = True
    valid[:10] = False  # samples without any valid token stay empty
    keep = build_keep(torch.ones(b, 2), valid, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), gen())
    assert not keep[:10].any()
    assert torch.all(keep[10:].sum(dim=1) == 1)
    assert not (keep & ~valid).any()
    share = keep[10:, [2, 5, 7]].double().mean(dim=0)
    for s in share.tolist():
        assert close(s, 1 / 3, math.sqrt(2 / 9), b - 10)


def test_build_keep_deterministic_and_every_sample_sees_something():
    s = make_strategy("miam", 2)
    p = s.sample(512, gen(5))
    valid = torch.rand(512, 12, generator=gen(6)) < 0.5
    group = torch.tensor([0] * 4 + [1] * 8)
    k1, k2 = build_keep(p, valid, group, gen(9)), build_keep(p, valid, group, gen(9))
    assert torch.equal(k1, k2)
    assert torch.equal(k1.any(dim=1), valid.any(dim=1))


def test_mean_mask_rate():
    p = torch.tensor([[0.0, 1.0], [0.5, 0.0]])
    assert torch.allclose(mean_mask_rate(p), torch.tensor([0.25, 0.5]))


# --- monitor -------------------------------------------------------------------------------------


def test_monitor_ratios_are_one_before_two_evaluations():
    mon = ImbalanceMonitor(["a", "b", "c"])
    assert torch.equal(mon.ratios, torch.ones(3))
    rec = mon.update({"a": 0.9, "b": 0.3, "c": 0.5})
    assert torch.equal(mon.ratios, torch.ones(3))
    assert math.isnan(rec["d_a"]) and math.isnan(rec["rho_d_b"]) and rec["r_c"] == 1.0
    assert rec["s_a"] == 0.9 and rec["rho_s_a"] > 1


def test_monitor_hand_computed_three_modalities():
    mon = ImbalanceMonitor(["a", "b", "c"], eps=1e-12)
    mon.update([0.1, 0.8, 1.9])
    rec = mon.update([0.5, 1.0, 2.0])
    # geomean(s) = (0.5·1·2)^(1/3) = 1 → ρ_s = [0.5, 1, 2]
    # d = [0.4, 0.2, 0.1], geomean = 0.2 → ρ_d = [2, 1, 0.5] → r = [0.25, 1, 4]
    for key, expected in {
        "rho_s": [0.5, 1, 2], "d": [0.4, 0.2, 0.1], "rho_d": [2, 1, 0.5], "r": [0.25, 1, 4]
    }.items():
        for name, e in zip("abc", expected):
            assert rec[f"{key}_{name}"] == pytest.approx(e, rel=1e-9)
    assert torch.allclose(mon.ratios, torch.tensor([0.25, 1.0, 4.0]))
    assert len(mon.records) == 2


def test_monitor_default_eps_matches_formula():
    mon = ImbalanceMonitor(["a", "b"])
    mon.update(torch.tensor([0.6, 0.7]))
    rec = mon.update(torch.tensor([0.65, 0.7]))
    d = [0.05 + 1e-4, 1e-4]
    g = math.sqrt(d[0] * d[1])
    rho_s = [0.65 / math.sqrt(0.65 * 0.7), 0.7 / math.sqrt(0.65 * 0.7)]
    assert rec["r_a"] == pytest.approx(rho_s[0] / (d[0] / g), rel=1e-6)
    assert rec["r_b"] == pytest.approx(rho_s[1] / (d[1] / g), rel=1e-6)


def test_monitor_plateau_does_not_divide_by_zero():
    mon = ImbalanceMonitor(["a", "b"])
    mon.update({"a": 0.7, "b": 0.4})
    rec = mon.update({"a": 0.7, "b": 0.4})
    assert rec["d_a"] == 0 and rec["rho_d_a"] == pytest.approx(1.0)
    assert torch.isfinite(mon.ratios).all()
    assert rec["r_a"] == pytest.approx(rec["rho_s_a"])


def test_monitor_floors_non_positive_scores():
    mon = ImbalanceMonitor(["a", "b"])
    mon.update([-0.1, 0.5])
    mon.update([0.0, 0.6])
    assert torch.isfinite(mon.ratios).all() and (mon.ratios > 0).all()


def test_monitor_smoothing():
    mon = ImbalanceMonitor(["a", "b"], smoothing=0.5)
    mon.update([0.0, 0.0])
    assert mon.update([0.4, 0.2])["d_a"] == pytest.approx(0.4)  # first speed: nothing to smooth with
    assert mon.update([0.6, 0.2])["d_a"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.2)


def test_monitor_rejects_bad_scores():
    mon = ImbalanceMonitor(["a", "b"])
    with pytest.raises(ValueError):
        mon.update({"a": 0.5})
    with pytest.raises(ValueError):
        mon.update([0.5, float("nan")])


def test_monitor_state_dict_round_trip_continues_identically():
    seq = [[0.5, 0.6, 0.2], [0.6, 0.61, 0.3], [0.62, 0.7, 0.31], [0.7, 0.7, 0.4]]
    a = ImbalanceMonitor(["x", "y", "z"], smoothing=0.3)
    for s in seq[:2]:
        a.update(s)
    b = ImbalanceMonitor(["x", "y", "z"], smoothing=0.3)
    b.load_state_dict(roundtrip(a.state_dict()))
    for s in seq[2:]:
        assert a.update(s) == b.update(s)  # no NaN once two evaluations exist
    assert len(a.records) == len(b.records) == 4
    for ra, rb in zip(a.records, b.records):  # NaN != NaN, so compare with a NaN-aware test
        assert ra.keys() == rb.keys()
        assert all(ra[k] == rb[k] or (math.isnan(ra[k]) and math.isnan(rb[k])) for k in ra)
    assert torch.equal(a.ratios, b.ratios)


def test_monitor_feeds_miam():
    mon, miam = ImbalanceMonitor(["a", "b"]), make_strategy("miam", 2)
    mon.update([0.9, 0.3])
    mon.update([0.91, 0.5])  # a strong and stable, b weak and learning fast
    miam.update(ratios=mon.ratios)
    mean = miam.sample(20_000, gen()).mean(dim=0)
    assert mean[0] > mean[1]


def test_plot_imbalance_writes_png(tmp_path):
    mon = ImbalanceMonitor(["a", "b"])
    for i, s in enumerate([[0.5, 0.3], [0.6, 0.35], [0.62, 0.45]]):
        rec = mon.update(s)
        rec.update({"epoch": i, "p_a": 0.5 + 0.1 * i, "p_b": 0.5})
    out = plot_imbalance(mon.records, ["a", "b"], tmp_path / "plots" / "imbalance.png")
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_monitor_skill_scores_mask_the_learned_modality_more():
    # a learned modality (AUC 0.70 → 0.80) and one still at chance (0.50 → 0.51): with raw AUC the
    # unlearned one looks "strong and stable" (r above the learned one's); skill above chance fixes that
    names = ["learned", "unlearned"]
    raw, skill = ImbalanceMonitor(names), ImbalanceMonitor(names, chance=0.5)
    for scores in ([0.70, 0.50], [0.80, 0.51]):
        raw.update(scores)
        rec = skill.update(scores)
    assert raw.ratios[1] > raw.ratios[0]
    assert skill.ratios[0] > skill.ratios[1]
    # k = (s - 0.5) / 0.5: 0.6 and 0.02; d = 0.2 and 0.02
    assert rec["k_learned"] == pytest.approx(0.6) and rec["k_unlearned"] == pytest.approx(0.02)
    assert rec["d_learned"] == pytest.approx(0.2) and rec["d_unlearned"] == pytest.approx(0.02)
    rho_s = 0.6 / math.sqrt(0.6 * 0.02)
    rho_d = (0.2 + 1e-4) / math.sqrt((0.2 + 1e-4) * (0.02 + 1e-4))
    assert rec["r_learned"] == pytest.approx(rho_s / rho_d, rel=1e-9)


def test_monitor_skill_floor_keeps_ratios_finite_below_chance():
    mon = ImbalanceMonitor(["a", "b"], chance=0.5)
    mon.update([0.45, 0.8])
    rec = mon.update([0.40, 0.9])
    assert rec["d_a"] == pytest.approx(0.1)  # the change is measured before the floor
    assert torch.isfinite(mon.ratios).all() and (mon.ratios > 0).all()
    assert rec["rho_s_a"] == pytest.approx(0.01 / math.sqrt(0.01 * 0.8))
    state = mon.state_dict()
    again = ImbalanceMonitor(["a", "b"])
    again.load_state_dict(state)
    assert again.chance == 0.5 and again.update([0.4, 0.9]) == mon.update([0.4, 0.9])


# --- noise-aware monitor ---------------------------------------------------------------------------


class _Plateau:
    """A simulated model on a fixed validation set: per modality a true score signal plus, at every
    evaluation, fresh prediction noise (what SGD does to a model whose population AUC has stopped
    moving). Returns the measured macro AUC and its influence vector, as the trainer does."""

    def __init__(self, strengths, gains=None, n=600, classes=6, seed=0):
        self.rng = np.random.default_rng(seed)
        self.y = self.rng.random((n, classes)) < 0.3
        self.latent = self.rng.standard_normal((n, classes))
        self.strengths, self.gains = np.asarray(strengths, float), np.zeros(len(strengths)) if gains is None else np.asarray(gains, float)
        self.t = 0

    def evaluate(self):
        from miam_cli.scoring.uncertainty import auc_influence

        scores, psi = [], []
        for m, (a, g) in enumerate(zip(self.strengths, self.gains)):
            signal = (a + g * self.t) * self.y + 0.6 * self.latent
            s = signal + 0.5 * self.rng.standard_normal(self.y.shape)
            auc, infl, _ = auc_influence(self.y, s)
            scores.append(auc)
            psi.append(infl)
        self.t += 1
        return scores, np.stack(psi)


def test_noise_aware_monitor_ignores_plateau_noise_the_paper_follows():
    """All modalities plateaued: the paper's r swings by orders of magnitude with validation noise;
    the noise-aware r settles on ρ_s (strong masked more) and never jumps by more than max_step."""
    names = ["strong", "mid", "weak"]
    paper = ImbalanceMonitor(names, chance=0.5)
    aware = ImbalanceMonitor(names, chance=0.5, mode="noise-aware", max_step=2.0)
    sim = _Plateau([1.5, 0.8, 0.3])
    paper_r, aware_r = [], []
    for _ in range(12):
        scores, psi = sim.evaluate()
        paper.update(scores, psi)
        rec = aware.update(scores, psi)
        paper_r.append(paper.ratios.numpy().copy())
        aware_r.append(aware.ratios.numpy().copy())
    paper_r, aware_r = np.log(np.array(paper_r[2:])), np.log(np.array(aware_r[2:]))
    assert np.ptp(paper_r, axis=0).max() > np.log(8)  # the paper's ratio wanders over > 8x
    assert np.ptp(aware_r[4:], axis=0).max() < np.log(2)  # the noise-aware one settles within 2x
    assert np.ptp(aware_r, axis=0).max() < 0.5 * np.ptp(paper_r, axis=0).max()
    final = np.exp(aware_r[-1])
    assert final[0] > final[1] > final[2]  # ordered by strength, as ρ_s is
    assert rec["d_strong"] == 0.0 or rec["d_strong"] < rec["se_delta_strong"]
    assert all(rec[f"se_delta_{n}"] > 0 and rec[f"se_{n}"] > 0 for n in names)


def test_noise_aware_monitor_sees_a_modality_that_really_learns():
    """A weak modality that gains steadily beyond noise gets a lower r (masked less) than the same
    modality on a plateau: the learning speed still speaks when it is a signal."""
    names = ["strong", "weak"]
    results = {}
    for label, gains in (("plateau", [0.0, 0.0]), ("learning", [0.0, 0.08])):
        mon = ImbalanceMonitor(names, chance=0.5, mode="noise-aware")
        sim = _Plateau([1.5, 0.3], gains, seed=1)
        for _ in range(6):
            rec = mon.update(*sim.evaluate())
        results[label] = (mon.ratios[1].item(), rec["d_weak"])
    assert results["learning"][1] > 0.0
    assert results["learning"][0] < results["plateau"][0]


def test_noise_aware_ratio_steps_are_bounded():
    rng = np.random.default_rng(5)
    for max_step in (1.5, 2.0, 4.0):
        mon = ImbalanceMonitor(["a", "b", "c"], chance=0.5, mode="noise-aware", max_step=max_step, z=0.0)
        prev = mon.ratios.numpy().astype(np.float64)
        for _ in range(30):  # wild scores: the targets jump by orders of magnitude
            scores = rng.uniform(0.5, 1.0, size=3)
            psi = rng.normal(0, 1e-4, size=(3, 50))
            mon.update(scores, psi)
            now = mon.ratios.numpy().astype(np.float64)
            assert np.all(np.abs(np.log(now) - np.log(prev)) <= np.log(max_step) + 1e-6)
            prev = now


def test_noise_aware_monitor_hand_computed():
    """Two modalities, window 1, z = 1: d = max(|Δk| − σΔ, 0), τ = median σΔ, one trust-region step."""
    mon = ImbalanceMonitor(["a", "b"], chance=0.5, mode="noise-aware", window=1, z=1.0, max_step=2.0)
    psi0 = np.array([[0.01, -0.01, 0.0, 0.0], [0.0, 0.0, 0.02, -0.02]])
    mon.update([0.70, 0.60], psi0)
    psi1 = np.array([[0.01, -0.01, 0.01, 0.0], [0.0, 0.0, 0.02, -0.02]])
    rec = mon.update([0.80, 0.60], psi1)
    # Δk = [0.2, 0]; σΔ = [0.01/0.5, 0] = [0.02, 0]; d = [0.18, 0]; τ = median(0.02, 0) = 0.01
    assert rec["delta_a"] == pytest.approx(0.2) and rec["se_delta_a"] == pytest.approx(0.02)
    assert rec["d_a"] == pytest.approx(0.18) and rec["d_b"] == 0.0
    g_d = math.sqrt(0.19 * 0.01)
    k = [0.6, 0.2]
    rho_s = [k[0] / math.sqrt(k[0] * k[1]), k[1] / math.sqrt(k[0] * k[1])]
    target = [rho_s[0] / (0.19 / g_d), rho_s[1] / (0.01 / g_d)]
    expected = [min(max(t, 0.5), 2.0) for t in target]  # from r = 1, at most a factor 2
    assert rec["r_a"] == pytest.approx(expected[0], rel=1e-9) and rec["r_b"] == pytest.approx(expected[1], rel=1e-9)
    assert rec["se_a"] == pytest.approx(math.sqrt(0.01**2 * 3))


def test_noise_aware_monitor_state_round_trip_and_refusals():
    sim = _Plateau([1.2, 0.4], [0.0, 0.05], seed=2)
    evals = [sim.evaluate() for _ in range(6)]
    a = ImbalanceMonitor(["x", "y"], chance=0.5, mode="noise-aware", window=3)
    for e in evals[:3]:
        a.update(*e)
    b = ImbalanceMonitor(["x", "y"], chance=0.5, mode="noise-aware", window=3)
    b.load_state_dict(roundtrip(a.state_dict()))
    for e in evals[3:]:
        assert a.update(*e) == b.update(*e)
    with pytest.raises(ValueError, match="influence"):
        a.update([0.6, 0.6])
    with pytest.raises(ValueError, match="same samples"):
        a.update([0.6, 0.6], np.zeros((2, 7)))
    with pytest.raises(ValueError, match="monitor"):
        ImbalanceMonitor(["x", "y"]).load_state_dict(a.state_dict())


def test_kappa_per_token_masks_whole_modalities_at_masked_corners():
    """At a masked end, P(all T tokens masked) = a/(a+T): 10/68 for 58 tokens with the paper's κ,
    at least 1/2 with kappa_per_token = 1 (κ_m = max(κ, T_m))."""
    tokens = [58, 64, 1]
    for per_token, expected in ((0.0, [10 / 68, 10 / 74, 10 / 11]), (1.0, [0.5, 0.5, 10 / 11])):
        strat = make_strategy("beta-cube", 3, tokens=tokens, kappa_per_token=per_token, w0=0.0, w1=1.0)
        p = strat.sample(40_000, gen()).double()  # w1 = 1: every draw at the all-masked corner
        whole = (p ** torch.tensor(tokens, dtype=torch.float64)).mean(dim=0)  # E[p^T]
        assert torch.allclose(whole, torch.tensor(expected, dtype=torch.float64), atol=0.01)
    with pytest.raises(UserError, match="kappa_per_token"):
        make_strategy("miam", 2, kappa_per_token=1.0)


def test_single_modality_counts():
    from miam_cli.masking.keep import single_modality_counts

    group = torch.tensor([0, 0, 1, 2, 2])
    keep = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0], [0, 0, 1, 0, 0]], dtype=torch.bool)
    assert single_modality_counts(keep, group, 3).tolist() == [1.0, 1.0, 1.0]


def test_noise_aware_monitor_leaves_a_modality_at_chance_out():
    """strong (plateau), mid (still learning), dead (at chance): the dead one keeps r = 1 and does not
    drag the geometric means, so the learning one is masked less than neutral and the strong one more.
    The paper's monitor, given the same scores, puts the learning modality above 1 at some updates."""
    names = ["strong", "mid", "dead"]
    aware = ImbalanceMonitor(names, chance=0.5, mode="noise-aware")
    paper = ImbalanceMonitor(names, chance=0.5)
    sim = _Plateau([1.5, 0.5, 0.0], [0.0, 0.1, 0.0], seed=4)
    paper_mid = []
    for _ in range(6):
        scores, psi = sim.evaluate()
        rec = aware.update(scores, psi)
        paper.update(scores, psi)
        paper_mid.append(paper.ratios[1].item())
    r = dict(zip(names, aware.ratios.tolist()))
    assert max(paper_mid) > 1.0
    assert rec["learned_dead"] == 0.0 and rec["learned_mid"] == 1.0 and math.isnan(rec["rho_s_dead"])
    assert r["dead"] == 1.0 and r["mid"] < 1.0 < r["strong"]
