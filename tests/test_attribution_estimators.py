"""Shapley estimators (exact, subset table, antithetic permutation sampling, paired KernelSHAP) and reports."""

from __future__ import annotations

import csv
import itertools
import json
import math
import re

import numpy as np
import pytest

from miam_cli.attribution.estimators import (
    ConvergenceTracker,
    KernelSampler,
    PermutationSampler,
    RegressionTracker,
    ShapleyResult,
    Tolerance,
    TooManyPlayersError,
    all_coalitions,
    exact_shapley,
    merge,
    next_batch,
    shapley_from_subset_values,
)
from miam_cli.attribution.report import write_report
from miam_cli.errors import UserError


# --- games -------------------------------------------------------------------------------------


def additive_game(weights: np.ndarray):
    return lambda coalitions: coalitions.astype(float) @ weights


def interaction_game(num_players: int, seed: int = 0):
    """Main effects, pairwise products and a max over visible weights: far from additive."""
    rng = np.random.default_rng(seed)
    main, weights = rng.normal(size=num_players), rng.uniform(size=num_players)
    pairs = rng.normal(size=(num_players, num_players))

    def game(coalitions: np.ndarray) -> np.ndarray:
        s = coalitions.astype(float)
        return s @ main + np.einsum("ki,ij,kj->k", s, pairs, s) + (s * weights).max(axis=1)

    return game


class Recorder:
    """Counts calls and rows, and remembers every coalition the estimator asked for."""

    def __init__(self, game):
        self.game, self.calls, self.rows = game, 0, []

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.rows.extend(map(tuple, coalitions))
        return self.game(coalitions)


def brute_force_shapley(game, num_players: int) -> np.ndarray:
    """Average marginal contributions over all P! orderings (the definition)."""
    phi = np.zeros(num_players)
    for perm in itertools.permutations(range(num_players)):
        prefixes = np.zeros((num_players + 1, num_players), bool)
        for t, player in enumerate(perm):
            prefixes[t + 1 :, player] = True
        values = game(prefixes)
        phi[list(perm)] += np.diff(values)
    return phi / math.factorial(num_players)


SMALL = 5
WEIGHTS = np.array([3.0, -1.0, 0.5, 2.0, 0.0, 1.25])


# --- exact -------------------------------------------------------------------------------------


def test_exact_additive_game_returns_the_weights():
    result = exact_shapley(additive_game(WEIGHTS), len(WEIGHTS))
    np.testing.assert_allclose(result.values, WEIGHTS, atol=1e-9)
    assert result.method == "exact" and result.converged
    assert np.all(result.std_errors == 0)
    assert result.evaluations == 2 ** len(WEIGHTS)


def test_exact_matches_brute_force_and_is_efficient():
    game = interaction_game(SMALL)
    result = exact_shapley(game, SMALL, player_names=list("abcde"))
    np.testing.assert_allclose(result.values, brute_force_shapley(game, SMALL), atol=1e-9)
    assert result.players == list("abcde")
    assert result.v_none == game(np.zeros((1, SMALL), bool))[0]
    assert result.v_all == game(np.ones((1, SMALL), bool))[0]
    assert abs(result.efficiency_gap) < 1e-10


def test_exact_makes_one_batched_call_with_every_coalition_once():
    recorder = Recorder(interaction_game(SMALL))
    exact_shapley(recorder, SMALL)
    assert recorder.calls == 1
    assert len(recorder.rows) == len(set(recorder.rows)) == 2**SMALL


def test_exact_refuses_too_many_players():
    with pytest.raises(TooManyPlayersError, match="permutation sampling") as info:
        exact_shapley(additive_game(np.ones(30)), 30)
    assert isinstance(info.value, ValueError) and isinstance(info.value, UserError)


def test_subset_table_gives_the_exact_values():
    game = interaction_game(SMALL, seed=3)
    coalitions = all_coalitions(SMALL)
    table = {frozenset(np.flatnonzero(c).tolist()): v for c, v in zip(coalitions, game(coalitions))}
    from_table = shapley_from_subset_values(table, SMALL)
    np.testing.assert_allclose(from_table.values, exact_shapley(game, SMALL).values, atol=1e-12)
    assert from_table.evaluations == 0
    del table[frozenset()]
    with pytest.raises(ValueError, match="empty set"):
        shapley_from_subset_values(table, SMALL)


# --- permutation sampling ----------------------------------------------------------------------


def test_sampler_on_additive_game_is_exact_with_zero_error():
    result = PermutationSampler(additive_game(WEIGHTS), len(WEIGHTS), budget=None).run(pairs=20)
    np.testing.assert_allclose(result.values, WEIGHTS, atol=1e-9)
    assert result.method == "permutation"
    assert np.all(result.std_errors < 1e-12)


def test_sampler_stops_early_once_errors_are_small():
    weights = np.linspace(-1, 1, 20)  # 2^20 coalitions: sampling cannot run out of new ones
    sampler = PermutationSampler(additive_game(weights), 20, budget=10**6, batch_permutations=16, min_pairs=8)
    result = sampler.run()
    assert result.converged and result.tracker.count == 8


def test_sampler_within_three_standard_errors_of_brute_force():
    game = interaction_game(SMALL)
    truth = brute_force_shapley(game, SMALL)
    result = PermutationSampler(game, SMALL, budget=None, tolerance=0, seed=1).run(pairs=300)
    assert np.all(np.abs(result.values - truth) <= 3 * result.std_errors)
    assert abs(result.efficiency_gap) < 1e-9  # each permutation telescopes to v(all) − v(none)


def test_sampler_error_shrinks_with_budget():
    players = 14  # 16,384 coalitions, so neither budget can cover the game
    game = interaction_game(players, seed=7)
    truth = exact_shapley(game, players).values

    def mean_abs_error(budget: int) -> float:
        errors = []
        for seed in range(4):
            result = PermutationSampler(game, players, budget=budget, tolerance=0, seed=seed).run()
            assert result.evaluations <= budget and not result.converged
            errors.append(np.abs(result.values - truth).mean())
        return float(np.mean(errors))

    assert mean_abs_error(3200) < 0.5 * mean_abs_error(200)


def test_sampler_batches_and_never_repeats_a_coalition():
    players, pairs, batch = 10, 40, 16
    recorder = Recorder(interaction_game(players))
    result = PermutationSampler(recorder, players, budget=None, batch_permutations=batch).run(pairs=pairs)
    assert recorder.calls == math.ceil(pairs / (batch // 2))
    assert len(recorder.rows) == len(set(recorder.rows)) == result.evaluations
    assert result.evaluations <= pairs * 2 * players  # ∅ and the full set are shared by a pair


def test_sampler_respects_the_budget_and_refuses_one_too_small():
    recorder = Recorder(interaction_game(12))
    result = PermutationSampler(recorder, 12, budget=500, tolerance=0).run()
    assert len(recorder.rows) == result.evaluations <= 500
    with pytest.raises(ValueError, match="budget"):
        PermutationSampler(interaction_game(12), 12, budget=10).run()


def test_small_game_sampled_to_completion_returns_exact_values():
    game = interaction_game(SMALL)
    result = PermutationSampler(game, SMALL, budget=1000, tolerance=0).run()
    assert result.method == "exact" and result.evaluations == 2**SMALL
    np.testing.assert_allclose(result.values, brute_force_shapley(game, SMALL), atol=1e-9)


def test_shards_merge_to_the_single_run():
    players, game = 9, interaction_game(9, seed=2)
    whole = PermutationSampler(game, players, budget=None, seed=5).run(pairs=40)
    # One sampler (own cache) per shard, as in separate SLURM tasks; another batch size on
    # purpose: a pair's permutation must not depend on batching.
    shards = [PermutationSampler(game, players, budget=None, seed=5, batch_permutations=10).run(
        pairs=20, first_pair=first) for first in (0, 20)]
    # Shards travel as JSON between SLURM tasks.
    pooled = merge([ShapleyResult.from_dict(json.loads(json.dumps(s.to_dict()))) for s in shards])
    np.testing.assert_allclose(pooled.values, whole.values, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(pooled.std_errors, whole.std_errors, rtol=1e-10)
    assert pooled.tracker.count == 40
    assert pooled.evaluations == sum(s.evaluations for s in shards) > whole.evaluations


def test_tracker_batch_updates_equal_plain_statistics():
    samples = np.random.default_rng(0).normal(size=(50, 3))
    tracker = ConvergenceTracker.empty(3)
    for chunk in np.array_split(samples, 7):
        tracker.update(chunk)
    np.testing.assert_allclose(tracker.mean, samples.mean(axis=0))
    np.testing.assert_allclose(tracker.std_errors, samples.std(axis=0, ddof=1) / np.sqrt(50))


# --- paired KernelSHAP ------------------------------------------------------------------------


def test_kernel_on_additive_game_is_exact_from_any_sample():
    # b = A·w for an additive game, so the constrained fit returns w whatever pairs were drawn
    result = KernelSampler(additive_game(WEIGHTS), len(WEIGHTS), budget=None).run(pairs=12)
    np.testing.assert_allclose(result.values, WEIGHTS, atol=1e-9)
    assert result.method == "kernel" and np.all(result.std_errors < 1e-9)


def test_kernel_size_effects_absorb_any_function_of_coalition_size():
    # v(S) = h(|S|) + additive: a saturating climb like a model's AUC; the size effects take h whole,
    # so the fit is exact from a handful of pairs (plain KernelSHAP would be off by h's curvature)
    climb = 1 - np.exp(-0.7 * np.arange(len(WEIGHTS) + 1))
    game = lambda c: climb[c.sum(axis=1)] + c.astype(float) @ WEIGHTS  # noqa: E731
    result = KernelSampler(game, len(WEIGHTS), budget=None).run(pairs=40)
    np.testing.assert_allclose(result.values, WEIGHTS + climb[-1] / len(WEIGHTS), atol=1e-9)


def test_kernel_is_exact_on_pairwise_games_from_any_sample():
    # complements cancel every second-order interaction, and the size effects keep that so: the
    # sampling error starts at third-order interactions
    players = 10
    rng = np.random.default_rng(0)
    main, pairs = rng.normal(size=players), np.triu(rng.normal(size=(players, players)), 1)
    game = lambda c: c.astype(float) @ main + np.einsum("ki,ij,kj->k", c.astype(float), pairs, c.astype(float))  # noqa: E731
    result = KernelSampler(game, players, budget=None, seed=1).run(pairs=20)
    np.testing.assert_allclose(result.values, main + pairs.sum(axis=0) / 2 + pairs.sum(axis=1) / 2, atol=1e-9)


def test_kernel_solve_on_the_complete_weighted_table_is_exact_shapley():
    # every pair (S, S̄) repeated in proportion to the Shapley kernel's weight of S: the fit with
    # size effects is then the population fit, which must equal Shapley values exactly
    players = 6
    game = interaction_game(players, seed=9)
    coalitions = all_coalitions(players)[1:-1]
    sizes = coalitions.sum(axis=1)
    weight = 1 / (np.array([math.comb(players, s) for s in sizes]) * sizes * (players - sizes))
    repeats = np.rint(2 * weight / weight.min()).astype(int)  # 12, 3, 2 for sizes 1 (and 5), 2 (and 4), 3
    assert np.allclose(repeats * weight.min() / 2, weight)
    first = np.repeat(coalitions, repeats, axis=0)
    gains = np.stack([game(first), game(~first)], axis=1) - game(np.zeros((1, players), bool))
    tracker = RegressionTracker(first, gains)
    values, _ = tracker.solve(float(game(np.ones((1, players), bool))[0] - game(np.zeros((1, players), bool))[0]))
    np.testing.assert_allclose(values, brute_force_shapley(game, players), atol=1e-10)


def test_kernel_within_three_standard_errors_and_efficient():
    players = 12
    game = interaction_game(players, seed=3)
    truth = exact_shapley(game, players).values
    result = KernelSampler(game, players, budget=None, tolerance=0, seed=1).run(pairs=600)
    assert np.all(np.abs(result.values - truth) <= 3 * result.std_errors)
    assert abs(result.efficiency_gap) < 1e-9  # imposed by the constrained least squares


def test_kernel_standard_errors_are_calibrated():
    # over independent runs, (estimate − truth) / standard error should have sd ≈ 1: a standard
    # error that ignores A's noise overstates the error many times (sd ≈ 0.1 on this game)
    players = 10
    game = interaction_game(players, seed=4)
    truth = exact_shapley(game, players).values
    z = [(r.values - truth) / r.std_errors for r in
         (KernelSampler(game, players, budget=None, tolerance=0, seed=s).run(pairs=150) for s in range(30))]
    assert 0.75 < float(np.std(z)) < 1.3


def test_kernel_error_shrinks_with_budget_and_beats_permutations():
    players = 14
    game = interaction_game(players, seed=7)
    truth = exact_shapley(game, players).values

    def rmse(sampler, budget: int) -> float:
        errors = []
        for seed in range(4):
            result = sampler(game, players, budget=budget, tolerance=0, seed=seed).run()
            assert result.evaluations <= budget and not result.converged
            errors.append(np.mean((result.values - truth) ** 2))
        return float(np.sqrt(np.mean(errors)))

    assert rmse(KernelSampler, 3200) < 0.5 * rmse(KernelSampler, 200)
    assert rmse(KernelSampler, 800) < 0.8 * rmse(PermutationSampler, 800)


def test_kernel_respects_the_budget_and_stops_when_converged():
    recorder = Recorder(interaction_game(12))
    result = KernelSampler(recorder, 12, budget=300, tolerance=0).run()
    assert len(recorder.rows) == len(set(recorder.rows)) == result.evaluations <= 300
    weights = np.linspace(-1, 1, 20)
    converged = KernelSampler(additive_game(weights), 20, budget=10**6, batch_pairs=8).run()
    # in batches of 8 up to 2P = 40 pairs: before that a fit with one effect per size drawn is too
    # close to saturated for its standard errors to be trusted
    assert converged.converged and converged.tracker.count == 40
    with pytest.raises(ValueError, match="budget"):
        KernelSampler(interaction_game(12), 12, budget=3).run()


def test_kernel_small_game_sampled_to_completion_returns_exact_values():
    game = interaction_game(SMALL)
    result = KernelSampler(game, SMALL, budget=1000, tolerance=0).run()
    assert result.method == "exact" and result.evaluations == 2**SMALL
    np.testing.assert_allclose(result.values, brute_force_shapley(game, SMALL), atol=1e-9)


def test_kernel_shards_merge_to_the_single_run():
    players, game = 11, interaction_game(11, seed=2)
    whole = KernelSampler(game, players, budget=None, seed=5).run(pairs=90)
    shards = [KernelSampler(game, players, budget=None, seed=5, batch_pairs=7).run(pairs=45, first_pair=first)
              for first in (0, 45)]
    pooled = merge([ShapleyResult.from_dict(json.loads(json.dumps(s.to_dict()))) for s in shards])
    np.testing.assert_allclose(pooled.values, whole.values, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(pooled.std_errors, whole.std_errors, rtol=1e-10)
    assert pooled.method == "kernel" and pooled.tracker.count == 90
    with pytest.raises(ValueError, match="different estimators"):
        merge([shards[0], PermutationSampler(game, players, budget=None).run(pairs=2)])


# --- captum cross-check ------------------------------------------------------------------------


def test_exact_matches_captum_shapley_values():
    torch = pytest.importorskip("torch")
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
    f = lambda x: model(x).squeeze(-1)
    x = torch.randn(1, 8, dtype=torch.float64)
    mask = torch.tensor([[0, 0, 1, 1, 2, 2, 3, 3]])

    def value_fn(coalitions: np.ndarray) -> np.ndarray:
        visible = torch.as_tensor(coalitions)[:, mask[0]]  # player -> its features
        with torch.no_grad():
            return f(x * visible).numpy()  # baseline zeros for hidden groups

    ours = exact_shapley(value_fn, 4).values
    theirs = captum_attr.ShapleyValues(f).attribute(x, baselines=0, feature_mask=mask)
    # captum gives each feature its whole group's value: read one feature per group.
    per_group = theirs[0, [0, 2, 4, 6]].numpy()
    np.testing.assert_allclose(ours, per_group, atol=1e-6)


# --- reports -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, players, extra",
    [
        ("bars", ["red", "green", "blue", "nir"], {}),
        ("line", ["y2018", "y2019", "y2020", "y2021"], {"axis_values": [2018, 2019, 2020, 2021]}),
        ("heatmap", ["r0c0", "r0c1", "r1c0", "r1c1"], {"grid": (2, 2)}),
    ],
)
def test_report_writes_csv_json_png_and_summary(tmp_path, kind, players, extra):
    game = interaction_game(4, seed=1)
    result = PermutationSampler(game, 4, budget=None, player_names=players).run(pairs=12)
    summary = write_report(result, tmp_path, "imp", kind, title="Importance", meta={"target": "global"},
                           **extra)

    with open(tmp_path / "imp.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["player", "axis_value", "phi", "std_error", "evaluations"]
    assert [r["player"] for r in rows] == players
    document = json.loads((tmp_path / "imp.json").read_text())
    assert document["efficiency"]["ok"] and document["meta"] == {"target": "global"}
    assert document["result"]["evaluations"] == result.evaluations
    assert (tmp_path / "imp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    top = players[int(np.argmax(result.values))]
    assert f"**{top}**" in summary and "Efficiency" in summary and re.search(r"\d+ coalitions? evaluated", summary)
    assert (tmp_path / "summary.md").read_text() == summary + "\n"


def test_report_refuses_bad_patch_names(tmp_path):
    result = exact_shapley(additive_game(np.ones(2)), 2, player_names=["a", "b"])
    with pytest.raises(ValueError, match="r<row>c<col>"):
        write_report(result, tmp_path, "p", "heatmap", grid=(1, 2))


# --- stopping rule -------------------------------------------------------------------------------


def test_tolerance_in_game_units_or_relative_to_the_total():
    assert Tolerance.of("0.002") == Tolerance(0.002) == Tolerance.of(0.002)
    rel = Tolerance.of("5%")
    assert rel == Tolerance(0, 0.05) and rel.threshold(0.51, 0.5) == pytest.approx(0.0005)
    assert rel.threshold(0.49, 0.5) == pytest.approx(0.0005)  # |v(all) - v(none)|: a negative total counts too
    assert str(rel) == "5% of |v(all) - v(none)|" and str(Tolerance(0.001)) == "0.001"
    errors = np.array([0.0004, 0.0009])
    assert Tolerance(0.001).met(errors, 0.5, 0.5) and not Tolerance(0.0005).met(errors, 0.5, 0.5)
    assert not Tolerance(0.001).met(np.array([0.0001, np.inf]), 1, 0)  # an unknown error is never small
    assert not Tolerance(0).met(np.zeros(2), 1, 0) and not Tolerance(0).stops_early  # zero: only the budget stops
    for bad in ("fast", "-1", "x%", "0.001,0.002", "1%,2%", "inf", "0.001,"):
        with pytest.raises(UserError, match="--tolerance"):
            Tolerance.of(bad)


def test_tolerance_in_units_or_share_whichever_is_larger():
    """The default: 0.001 in the game's units, or 2% of what the players share when that is larger."""
    both = Tolerance.of("0.001, 2%")
    assert both == Tolerance(0.001, 0.02) and Tolerance.of("2%,0.001") == both
    assert str(both) == "0.001 or 2% of |v(all) - v(none)|, whichever is larger"
    assert both.threshold(0.61, 0.5) == pytest.approx(0.0022)  # a large total: the share decides
    assert both.threshold(0.505, 0.5) == pytest.approx(0.001)  # a tiny one: the units floor decides
    errors = np.array([0.0004, 0.0020])
    assert both.met(errors, 0.61, 0.5) and not both.met(errors, 0.505, 0.5)
    from miam_cli.attribution import defaults
    assert Tolerance.of(defaults.TOLERANCE) == both


@pytest.mark.parametrize("sampler", [KernelSampler, PermutationSampler])
def test_tiny_values_stop_at_an_absolute_tolerance(sampler):
    """Values of ~1e-3 (a Landsat year beside the other modalities): an absolute tolerance stops early,
    where a rule relative to their own spread ran to the budget."""
    game = interaction_game(12, seed=3)
    tiny = lambda c: 1e-3 * game(c)  # noqa: E731
    spent = sampler(tiny, 12, budget=3000, tolerance=5e-5, seed=0).run()
    assert spent.converged and spent.std_errors.max() <= 5e-5 and spent.evaluations < 1000
    strict = sampler(tiny, 12, budget=3000, tolerance=spent.std_errors.max() / 2, seed=0).run()
    assert strict.evaluations > spent.evaluations and strict.std_errors.max() <= spent.std_errors.max() / 2
    relative = sampler(tiny, 12, budget=3000, tolerance="20%", seed=0).run()  # v(all) - v(none) is ~1.4e-4 here
    assert relative.converged and relative.std_errors.max() <= 0.2 * abs(relative.v_all - relative.v_none)


def test_batches_grow_geometrically_so_the_rule_is_checked_early():
    sizes, count = [], 0
    while count < 200:
        sizes.append(next_batch(count, 21, 256, None))
        count += sizes[-1]
    assert sizes[:3] == [21, 10, 15] and all(b <= 256 for b in sizes)
    assert all(b <= max(21, c // 2) for b, c in zip(sizes[1:], np.cumsum(sizes)))  # overshoot at most half the spent
    assert next_batch(30, 21, 8, pairs=34) == 4  # shards: what is left of their pairs


def test_samplers_report_progress_after_every_batch():
    calls = []
    # progress(evaluations, largest standard error, the error that stops sampling: None when the budget alone decides)
    KernelSampler(interaction_game(10), 10, budget=400, tolerance=0, progress=lambda *a: calls.append(a)).run()
    evaluations = [c[0] for c in calls]
    assert evaluations == sorted(evaluations) and evaluations[-1] <= 400 and all(c[2] is None for c in calls)
    assert len(calls) > 3 and all(c[1] is not None and c[1] > 0 for c in calls)  # the first batch is 2P pairs: errors known
    calls.clear()
    PermutationSampler(interaction_game(10), 10, budget=400, tolerance=0, progress=lambda *a: calls.append(a)).run()
    assert calls and calls[-1][0] <= 400 and calls[-1][1] > 0
    calls.clear()
    game = interaction_game(10)
    result = KernelSampler(game, 10, budget=400, tolerance="50%", progress=lambda *a: calls.append(a)).run()
    assert calls[-1][2] == pytest.approx(0.5 * abs(result.v_all - result.v_none))  # a share of |v(all) - v(none)|
