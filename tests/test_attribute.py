"""attribute: exact modality Shapley values, planted truth over bands and years, sampling, shards, warnings."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from miam_cli.attribution.estimators import KernelSampler, PermutationSampler, exact_shapley
from miam_cli.attribution.games import ModelGame, axis_players, parse_target
from miam_cli.runs.checkpoint import load_model
from miam_cli.runs.loaded import open_run
from miam_cli.runs.rundir import store_path
from miam_cli.store.reader import TokenStore

GROUPS = ["tabular", "image", "series"]
PNG = b"\x89PNG\r\n\x1a\n"


def attribute(cli, run, out, *args):
    code, stdout, err = cli("attribute", run, "--device", "cpu", "--out", out, "--json", *args)
    assert code == 0, err
    return json.loads(stdout), err


def brute_force_shapley(v, players):
    """φ_i = mean over all orderings of v(players before i, and i) − v(players before i)."""
    phi = np.zeros(len(players))
    orders = list(itertools.permutations(range(len(players))))
    for order in orders:
        seen = frozenset()
        for i in order:
            phi[i] += v[seen | {i}] - v[seen]
            seen = seen | {i}
    return phi / len(orders)


def all_visible_probs(run_dir):
    model, _ = load_model(run_dir, "best")
    store = TokenStore(store_path(run_dir))
    idx = store.split_indices("test")
    read = {m: store.read(m, idx) for m in model.layout.names}
    with torch.no_grad():
        logits = model({m: torch.from_numpy(v) for m, (v, _) in read.items()},
                       {m: torch.from_numpy(ok) for m, (_, ok) in read.items()})
    return torch.sigmoid(logits).numpy()


# ------------------------------------------------------------------ modalities


def test_modality_shapley_is_exact_and_reuses_eval_subsets(evaluated_run, cli, tmp_path):
    doc, _ = attribute(cli, evaluated_run, tmp_path)
    assert doc["method"] == "exact" and doc["players"] == GROUPS
    phi = np.array(doc["values"])
    # efficiency: Σφ = v(all) − v(none)
    assert abs(phi.sum() - (doc["v_all"] - doc["v_none"])) < 1e-9
    assert doc["efficiency"]["ok"] and abs(doc["efficiency"]["gap"]) < 1e-9
    # the values come from eval/subsets.csv, plus v(none): one model evaluation instead of 8
    assert doc["meta"]["reused_eval_subsets"] is True
    assert doc["evaluations"] == 1 and doc["reused"] == 7  # v(none) evaluated, the 2^3 - 1 others from the table
    table = pd.read_csv(evaluated_run / "eval" / "subsets.csv").set_index("subset")["auc"]
    v = {frozenset(): doc["v_none"]}
    for k in (1, 2, 3):
        for s in itertools.combinations(range(3), k):
            v[frozenset(s)] = float(table["+".join(GROUPS[i] for i in s)])
    assert doc["v_all"] == pytest.approx(v[frozenset({0, 1, 2})], abs=1e-12)
    assert doc["v_none"] == pytest.approx(0.5, abs=1e-12)  # nothing visible: one constant output, chance AUC
    mine = brute_force_shapley(v, GROUPS)
    exact = exact_shapley(lambda c: np.array([v[frozenset(np.flatnonzero(row).tolist())] for row in c]), 3, GROUPS)
    np.testing.assert_allclose(exact.values, mine, rtol=0, atol=1e-12)
    np.testing.assert_allclose(phi, mine, rtol=0, atol=1e-9)
    # files: CSV, JSON, bar plot, summary
    csv = pd.read_csv(tmp_path / "modalities-global-test.csv")
    assert list(csv["player"]) == GROUPS and np.allclose(csv["phi"], phi, atol=1e-12)
    assert (tmp_path / "modalities-global-test.png").read_bytes()[:8] == PNG
    summary = (tmp_path / "summary.md").read_text()
    assert "modalities" in summary and "1 coalition evaluated, 7 reused from eval/subsets.csv" in summary


def test_without_eval_subsets_all_coalitions_are_evaluated(evaluated_run, run_copy, cli, tmp_path):
    doc, _ = attribute(cli, run_copy, tmp_path)
    assert doc["meta"]["reused_eval_subsets"] is False
    assert doc["evaluations"] == 2 ** 3
    reused, _ = attribute(cli, evaluated_run, tmp_path / "reused")
    assert reused["evaluations"] < doc["evaluations"]
    # the same model, so the same values (the game and eval-subsets batch differently: rounding only)
    np.testing.assert_allclose(doc["values"], reused["values"], rtol=0, atol=1e-6)
    assert abs(sum(doc["values"]) - (doc["v_all"] - doc["v_none"])) < 1e-9


def test_class_target(evaluated_run, cli, tmp_path):
    doc, _ = attribute(cli, evaluated_run, tmp_path, "--target", "101")  # original id of class index 1
    assert doc["meta"]["target"] == "p(class 101)"
    assert doc["meta"]["reused_eval_subsets"] is False and doc["evaluations"] == 8  # the table holds AUCs, not p
    assert doc["v_all"] == pytest.approx(float(all_visible_probs(evaluated_run)[:, 1].mean()), abs=1e-6)
    assert abs(sum(doc["values"]) - (doc["v_all"] - doc["v_none"])) < 1e-9
    assert (tmp_path / "modalities-101-test.json").exists()
    by_index, _ = attribute(cli, evaluated_run, tmp_path / "by-index", "--target", "1")
    np.testing.assert_allclose(by_index["values"], doc["values"], rtol=0, atol=1e-12)


def test_unknown_target_is_refused(evaluated_run, cli, tmp_path):
    code, out, err = cli("attribute", evaluated_run, "--device", "cpu", "--out", tmp_path, "--target", "nosuch")
    assert code == 2 and "nosuch" in err and "Traceback" not in err and out == ""


# ------------------------------------------------------------------ planted truth


def test_red_and_nir_bands_rank_above_green_and_blue(evaluated_run, cli, tmp_path):
    doc, err = attribute(cli, evaluated_run, tmp_path, "--modality", "image", "--by", "band")
    assert doc["players"] == ["red", "green", "blue", "nir"] and doc["method"] == "exact"
    assert doc["evaluations"] == 2 ** 4
    phi = dict(zip(doc["players"], doc["values"]))
    assert min(phi["red"], phi["nir"]) > max(phi["green"], phi["blue"])
    assert abs(sum(doc["values"]) - (doc["v_all"] - doc["v_none"])) < 1e-9
    assert doc["meta"]["warning"] is None and "warning" not in err  # miam masks tokens, not only whole modalities
    assert (tmp_path / "image-by-band-global-context-all-test.png").read_bytes()[:8] == PNG


def test_event_year_ranks_first(evaluated_run, cli, tmp_path):
    doc, _ = attribute(cli, evaluated_run, tmp_path, "--modality", "series", "--by", "year")
    assert doc["players"] == [str(y) for y in range(2000, 2006)]
    assert doc["players"][int(np.argmax(doc["values"]))] == "2003"
    assert (tmp_path / "series-by-year-global-context-all-test.png").read_bytes()[:8] == PNG


def test_patches_give_a_heat_map(evaluated_run, cli, tmp_path):
    doc, _ = attribute(cli, evaluated_run, tmp_path, "--modality", "image", "--by", "patch")
    assert doc["players"] == ["r0c0", "r0c1", "r1c0", "r1c1"]
    report = json.loads((tmp_path / "image-by-patch-global-context-all-test.json").read_text())
    assert report["kind"] == "heatmap"
    png = tmp_path / "image-by-patch-global-context-all-test.png"
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 1000


# ------------------------------------------------------------------ sampling and shards


@pytest.mark.parametrize("sampler", [None, "permutation"])
def test_token_players_are_sampled_within_the_budget(evaluated_run, cli, tmp_path, sampler):
    doc, _ = attribute(cli, evaluated_run, tmp_path, "--modality", "image", "--by", "token", "--exact-max", "3",
                       "--budget", "200", "--max-samples", "100", *(["--sampler", sampler] if sampler else []))
    assert doc["method"] == (sampler or "kernel") and doc["meta"]["samples"] == 100
    assert len(doc["players"]) == 16 and doc["players"][0] == "band=red,patch=r0c0"
    assert 0 < doc["evaluations"] <= 200
    se = np.array(doc["std_errors"], dtype=float)
    assert np.all(np.isfinite(se)) and np.all(se > 0)
    assert doc["tracker"]["count"] >= 2
    # whole permutation pairs telescope, and KernelSHAP imposes it: efficiency holds exactly when sampling
    assert abs(sum(doc["values"]) - (doc["v_all"] - doc["v_none"])) < 1e-9
    csv = pd.read_csv(tmp_path / "image-by-token-global-context-all-test.csv")
    assert (csv["std_error"] > 0).all() and (csv["evaluations"] == doc["evaluations"]).all()


@pytest.mark.parametrize("sampler, budget, advice", [("kernel", 30, 66), ("permutation", 40, 68)])
def test_a_budget_too_small_for_standard_errors_says_which_budget_would_do(evaluated_run, cli, tmp_path, sampler, budget, advice):
    doc, err = attribute(cli, evaluated_run, tmp_path, "--modality", "image", "--by", "token", "--exact-max", "3",
                         "--budget", str(budget), "--max-samples", "50", "--sampler", sampler)
    assert not np.isfinite(np.array(doc["std_errors"], dtype=float)).all()
    assert abs(sum(doc["values"]) - (doc["v_all"] - doc["v_none"])) < 1e-9  # efficiency holds even so
    assert "standard errors unknown" in err and f"--budget {advice} or more" in err
    summary = (tmp_path / "summary.md").read_text()
    assert "Standard errors: **unknown**" in summary and f"--budget {advice} or more" in summary and "nan" not in summary
    doc, err = attribute(cli, evaluated_run, tmp_path, "--modality", "image", "--by", "token", "--exact-max", "3",
                         "--budget", str(advice), "--max-samples", "50", "--sampler", sampler)
    assert np.isfinite(np.array(doc["std_errors"], dtype=float)).all() and "standard errors unknown" not in err


def test_the_kernel_fit_never_fails_on_few_pairs():
    # one to a few pairs for 16 players: A + 11ᵀ is singular; the fit must still return efficient values
    from miam_cli.attribution.estimators import RegressionTracker, kernel_pairs

    for pairs in range(1, 12):
        coalitions = kernel_pairs(0, 0, pairs, 16)
        values, se = RegressionTracker(coalitions[0::2], np.random.default_rng(pairs).normal(size=(pairs, 2))).solve(1.0)
        assert np.isfinite(values).all() and values.sum() == pytest.approx(1.0) and np.isinf(se).all()


@pytest.mark.parametrize("sampler", ["kernel", "permutation"])
def test_sharded_sampling_merges_into_one_run_over_the_same_pairs(evaluated_run, cli, tmp_path, sampler):
    args = ("--modality", "image", "--by", "token", "--exact-max", "3", "--budget", "200", "--max-samples", "100",
            "--sampler", sampler, "--out", tmp_path)
    shard_docs = []
    for i in range(2):
        code, out, err = cli("attribute", evaluated_run, "--device", "cpu", "--shard", f"{i}/2", *args)
        assert code == 0, err
        path = tmp_path / "shards" / f"image-by-token-global-context-all-test-{i:03d}-of-002.json"
        assert str(path) in err and out == ""
        shard_docs.append(json.loads(path.read_text()))
    code, out, err = cli("attribute", evaluated_run, "--device", "cpu", "--merge", "--json", *args)
    assert code == 0, err
    doc = json.loads(out)
    pairs = [d["result"]["tracker"]["count"] for d in shard_docs]
    # half the budget each: a permutation pair is 2 x (16 + 1) coalitions; a kernel pair 2, after v(∅) and v(all)
    assert pairs[0] == pairs[1] == (100 // (2 * 17) if sampler == "permutation" else (100 - 2) // 2)
    assert doc["meta"]["shards"] == 2
    assert doc["tracker"]["count"] == sum(pairs)
    assert doc["evaluations"] == sum(d["result"]["evaluations"] for d in shard_docs) <= 200
    assert doc["meta"]["samples"] == 100

    # one run over the same pairs (0 .. 2m-1 of the seed-0 stream, same samples) gives the same values and
    # errors. Not bit for bit: coalitions share forward passes differently (other padding), and a last-digit
    # change can swap two near-tied scores in an AUC, moving a coalition's value by ~1/(n_pos n_neg C).
    run = open_run(evaluated_run)
    players = axis_players(run, "image", "token", "all")
    game = ModelGame(run, players, parse_target(run, "global"), max_samples=100)
    cls = PermutationSampler if sampler == "permutation" else KernelSampler
    single = cls(game, 16, budget=None, seed=0, player_names=players.names).run(pairs=sum(pairs))
    np.testing.assert_allclose(doc["values"], single.values, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.array(doc["std_errors"], float), single.std_errors, rtol=0, atol=1e-5)
    assert doc["v_all"] == pytest.approx(single.v_all, abs=1e-5) and doc["v_none"] == pytest.approx(single.v_none, abs=1e-12)
    assert abs(sum(doc["values"]) - (doc["v_all"] - doc["v_none"])) < 1e-9


def test_merge_refuses_a_missing_shard(evaluated_run, cli, tmp_path):
    args = ("--modality", "image", "--by", "token", "--exact-max", "3", "--budget", "100", "--max-samples", "50",
            "--out", tmp_path)
    assert cli("attribute", evaluated_run, "--device", "cpu", "--shard", "0/2", *args)[0] == 0
    code, out, err = cli("attribute", evaluated_run, "--device", "cpu", "--merge", *args)
    assert code == 2 and "1 of 2" in err and "Traceback" not in err


def test_shards_are_refused_for_exact_attribution(evaluated_run, cli, tmp_path):
    code, _, err = cli("attribute", evaluated_run, "--device", "cpu", "--out", tmp_path, "--modality", "image",
                       "--by", "band", "--shard", "0/2")
    assert code == 2 and "exactly" in err


# ------------------------------------------------------------------ coverage warning


def test_whole_modality_dropout_run_warns_for_band_attribution(tiny_store, tiny_trainer, cli, tmp_path):
    run = tiny_trainer(tiny_store, tmp_path / "dropout", masking={"strategy": "dropout"}, epochs=1)
    doc, err = attribute(cli, run, tmp_path / "attribution", "--modality", "image", "--by", "band")
    assert "warning" in err and "dropout" in err and "off-distribution" in err
    assert "dropout" in doc["meta"]["warning"] and "image" in doc["meta"]["warning"]
    report = json.loads((tmp_path / "attribution" / "image-by-band-global-context-all-test.json").read_text())
    assert report["meta"]["warning"] == doc["meta"]["warning"]
    assert "Coverage warning" in (tmp_path / "attribution" / "summary.md").read_text()
    # modality-level players are what dropout trains for: no warning there
    doc, err = attribute(cli, run, tmp_path / "modalities")
    assert doc["meta"]["warning"] is None and "warning" not in err
    assert math.isfinite(doc["v_all"])


def test_reports_of_different_settings_do_not_overwrite_each_other(evaluated_run, cli, tmp_path):
    """The bug: --context all and --context none (and other splits) wrote the same file names."""
    docs = {}
    for context in ("all", "none"):
        docs[context], _ = attribute(cli, evaluated_run, tmp_path, "--modality", "image", "--by", "band", "--context", context)
    val, _ = attribute(cli, evaluated_run, tmp_path, "--modality", "image", "--by", "band", "--split", "val")
    for context, split, doc in (("all", "test", docs["all"]), ("none", "test", docs["none"]), ("all", "val", val)):
        report = json.loads((tmp_path / f"image-by-band-global-context-{context}-{split}.json").read_text())
        assert report["meta"]["context"] == context and report["meta"]["split"] == split
        assert report["result"]["values"] == doc["values"]
    assert docs["all"]["values"] != docs["none"]["values"]
    assert (tmp_path / "summary.md").read_text().count("### ") == 3


def test_summary_counts_evaluations_done_and_reused_apart(evaluated_run, cli, tmp_path):
    code, out, err = cli("attribute", evaluated_run, "--device", "cpu", "--out", tmp_path)
    assert code == 0, err
    assert "1 coalition evaluated, 7 reused from eval/subsets.csv" in out.replace("\n", " ")


@pytest.mark.parametrize("sampler", ["kernel", "permutation"])
def test_sampling_tells_its_progress_and_estimates_the_time_first(evaluated_run, tmp_path, sampler):
    from miam_cli.attribution.run import AttributionRequest, run_attribution

    calls, logs = [], []
    req = AttributionRequest(modality="image", by="token", exact_max=3, budget=2500, max_samples=60, tolerance=1e-9,
                             sampler=sampler)  # several batches (each half as many pairs as drawn so far, at most 256 pairs)
    res = run_attribution(evaluated_run, req, tmp_path, log=logs.append, progress=lambda *a: calls.append(a))
    estimate = next(line for line in logs if "coalition evaluations, about" in line)
    assert estimate.startswith("16 players (token), 60 test samples: up to 2,500 coalition evaluations, about ")
    result = res.result
    done = [c[0] for c in calls]
    assert done == sorted(done) and done[-1] == result.evaluations <= 2500 and len(calls) >= 2
    assert {c[1] for c in calls} == {2500}  # evaluations are counted against the budget
    largest, target = calls[-1][2], calls[-1][3]
    # the last report is the result's: its largest standard error, and the tolerance (in the target's units)
    assert largest == pytest.approx(float(np.max(result.std_errors)), rel=1e-9)
    assert target == pytest.approx(1e-9, rel=1e-9)


def test_attribute_shows_a_plain_progress_line_in_batch_logs(evaluated_run, cli, tmp_path):
    code, _, err = cli("attribute", evaluated_run, "--device", "cpu", "--out", tmp_path, "--modality", "image", "--by", "token",
                       "--exact-max", "3", "--budget", "200", "--max-samples", "60")
    assert code == 0, err
    assert "up to 200 coalition evaluations, about" in err
    assert any(line.startswith("attribute: ") and "/200 (" in line and "std error" in line for line in err.splitlines()), err


# ------------------------------------------------------------------ speed-ups must not change values


@pytest.mark.parametrize("context", ["all", "none"])
def test_batched_game_equals_evaluating_each_coalition_alone(evaluated_run, context):
    """The game builds the keep masks of many coalitions at once and scores the primary metric only: the
    values are eval-subsets' metric of the same tokens visible, one coalition at a time."""
    from miam_cli.evaluate.predict import evaluate

    run = open_run(evaluated_run)
    players = axis_players(run, "series", "year", context)
    game = ModelGame(run, players, parse_target(run, "global"))
    coalitions = np.random.default_rng(0).random((9, len(players.names))) < 0.5
    coalitions[0], coalitions[1] = False, True
    values = game(coalitions)
    data = run.split("test")
    for row, value in zip(coalitions, values):
        visible = {m: v.clone() for m, v in players.context.items()}
        series = torch.zeros(run.modality_specs["series"].tokens, dtype=torch.bool)
        for p in np.flatnonzero(row):
            series |= players.visibility[p]["series"]
        visible["series"] = series
        alone = evaluate(run.model, data, run.task, visible, 256)["auc"]
        assert value == pytest.approx(alone, abs=1e-6)
    assert game.evaluations == len(coalitions)


def test_tolerance_in_auc_or_relative_and_recorded(evaluated_run, cli, tmp_path):
    base = ["--modality", "image", "--by", "token", "--exact-max", "3", "--max-samples", "100", "--budget", "400"]
    loose, _ = attribute(cli, evaluated_run, tmp_path / "a", *base, "--tolerance", "0.05")
    strict, _ = attribute(cli, evaluated_run, tmp_path / "b", *base, "--tolerance", "0")
    assert loose["converged"] and max(loose["std_errors"]) <= 0.05 and loose["evaluations"] < strict["evaluations"]
    assert not strict["converged"] and strict["evaluations"] <= 400  # 0: the budget decides
    assert loose["meta"]["tolerance"] == "0.05" and loose["meta"]["seconds"] > 0
    rel, _ = attribute(cli, evaluated_run, tmp_path / "c", *base, "--tolerance", "50%")
    assert rel["meta"]["tolerance"] == "50% of |v(all) - v(none)|"
    assert rel["converged"] == (max(rel["std_errors"]) <= 0.5 * abs(rel["v_all"] - rel["v_none"]))
    code, out, err = cli("attribute", evaluated_run, "--out", tmp_path / "d", *base, "--tolerance", "tight")
    assert code == 2 and "--tolerance 'tight'" in err and "Traceback" not in err and out == ""
