"""compare: strategies (rows) x input subsets (columns) + average, oracles, seeds, best per column."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from miam_cli.evaluate.subsets import run_eval_subsets

SUBSETS = ["tabular", "image", "series", "tabular+image", "tabular+series", "image+series", "tabular+image+series"]


@pytest.fixture(scope="module")
def runs(tiny_store, tiny_trainer, tmp_path_factory):
    """miam and uniform (seeds 0 and 1), 2 epochs each, and an image-only oracle; each eval-subsets'd."""
    root = tmp_path_factory.mktemp("compare-runs")
    made = {
        "miam": tiny_trainer(tiny_store, root / "miam", epochs=2),
        "uniform": tiny_trainer(tiny_store, root / "uniform", masking={"strategy": "uniform"}, epochs=2),
        "uniform-seed1": tiny_trainer(tiny_store, root / "uniform-seed1", masking={"strategy": "uniform"}, epochs=2, seed=1),
        "oracle": tiny_trainer(tiny_store, root / "oracle", modalities=["image"], epochs=2),
        "miam-k30": tiny_trainer(tiny_store, root / "miam-k30", masking={"strategy": "miam", "kappa": 30}, epochs=2),
    }
    for run in made.values():
        run_eval_subsets(run)
    return made


def auc(run, subset):
    return float(pd.read_csv(run / "eval" / "subsets.csv").set_index("subset").loc[subset, "auc"])


def test_rows_columns_oracle_and_average(runs, cli, tmp_path):
    code, out, err = cli("compare", runs["miam"], runs["uniform"], runs["oracle"], "--out", tmp_path, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["metric"] == "auc"
    assert doc["columns"] == SUBSETS + ["average"]
    rows = {r["strategy"]: r for r in doc["rows"]}
    assert [r["strategy"] for r in doc["rows"]] == ["miam", "uniform", "oracle"]
    for label in ("miam", "uniform"):
        means = [rows[label][c]["mean"] for c in SUBSETS]
        assert means == pytest.approx([auc(runs[label], s) for s in SUBSETS], abs=1e-12)
        assert rows[label]["average"]["mean"] == pytest.approx(np.mean(means), abs=1e-12)
        assert all(rows[label][c]["std"] is None for c in SUBSETS)  # one run: no spread
    # the oracle (trained on image alone) fills only the image column
    oracle = rows["oracle"]
    assert oracle["image"]["mean"] == pytest.approx(auc(runs["oracle"], "image"), abs=1e-12)
    assert all(oracle[c]["mean"] is None for c in SUBSETS + ["average"] if c != "image")

    csv = pd.read_csv(tmp_path / "compare.csv", index_col="strategy")
    assert list(csv.index) == ["miam", "uniform", "oracle"]
    assert csv.loc["uniform", "image_mean"] == pytest.approx(auc(runs["uniform"], "image"), abs=1e-12)
    assert csv.loc["miam", "average_mean"] == pytest.approx(rows["miam"]["average"]["mean"], abs=1e-12)
    assert np.isnan(csv.loc["oracle", "tabular_mean"])


def test_best_per_column_is_marked(runs, cli, tmp_path):
    code, out, err = cli("compare", runs["miam"], runs["uniform"], runs["oracle"], "--out", tmp_path, "--json")
    assert code == 0, err
    doc = json.loads(out)
    means = {r["strategy"]: r for r in doc["rows"]}
    expected = {c: max(("miam", "uniform"), key=lambda s: means[s][c]["mean"]) for c in doc["columns"]}
    assert doc["best"] == expected  # the oracle is a reference, never the best strategy

    md = (tmp_path / "compare.md").read_text().splitlines()
    header = [c.strip() for c in md[0].strip("|").split("|")]
    assert header == ["strategy"] + doc["columns"]
    body = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in md[2:5])}
    assert list(body) == ["miam", "uniform", "oracle"]
    for j, column in enumerate(doc["columns"]):
        bold = [label for label, cells in body.items() if cells[j].startswith("**")]
        assert bold == [expected[column]], column
        value = float(body[expected[column]][j].strip("*").split("±")[0])
        assert value == pytest.approx(100 * means[expected[column]][column]["mean"], abs=0.05)
    assert body["oracle"][0] == "–"  # no tabular column for the image oracle

    # the table on stdout marks the best with '*'
    code, out, _ = cli("compare", runs["miam"], runs["uniform"], runs["oracle"], "--out", tmp_path)
    assert code == 0 and "*" in out and "oracle" in out


def test_seeds_of_one_strategy_give_mean_and_std(runs, cli, tmp_path):
    code, out, err = cli("compare", runs["miam"], runs["uniform"], runs["uniform-seed1"], "--out", tmp_path, "--json")
    assert code == 0, err
    rows = {r["strategy"]: r for r in json.loads(out)["rows"]}
    assert list(rows) == ["miam", "uniform"]
    for c in SUBSETS:
        pair = np.array([auc(runs["uniform"], c), auc(runs["uniform-seed1"], c)])
        assert rows["uniform"][c]["mean"] == pytest.approx(pair.mean(), abs=1e-12)
        assert rows["uniform"][c]["std"] == pytest.approx(pair.std(ddof=1), abs=1e-12)
    # the average is the mean of the row's (mean) columns
    assert rows["uniform"]["average"]["mean"] == pytest.approx(np.mean([rows["uniform"][c]["mean"] for c in SUBSETS]))
    assert pair.std() > 0  # the seeds really differ
    csv = pd.read_csv(tmp_path / "compare.csv", index_col="strategy")
    assert csv.loc["uniform", "image_std"] == pytest.approx(rows["uniform"]["image"]["std"], abs=1e-12)
    md = (tmp_path / "compare.md").read_text()
    assert "±" in md.splitlines()[3]  # the uniform row shows mean ± std


def test_missing_subset_table_is_refused_with_a_hint(runs, tiny_run, cli, tmp_path):
    code, out, err = cli("compare", runs["miam"], tiny_run, "--out", tmp_path)
    assert code == 2
    assert "eval/subsets.csv" in err and "eval-subsets" in err and str(tiny_run) in err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "compare.csv").exists()


def test_ablations_of_one_strategy_get_their_own_rows(runs, cli, tmp_path):
    code, out, err = cli("compare", runs["miam"], runs["miam-k30"], runs["uniform"], runs["uniform-seed1"],
                         "--out", tmp_path, "--json")
    assert code == 0, err
    rows = {r["strategy"]: r for r in json.loads(out)["rows"]}
    # the seeds of uniform pool into one row; the two kappas of miam do not
    assert set(rows) == {"miam (masking.kappa=10.0)", "miam (masking.kappa=30.0)", "uniform"}
    k30 = rows["miam (masking.kappa=30.0)"]
    assert k30["tabular"]["mean"] == pytest.approx(auc(runs["miam-k30"], "tabular"), abs=1e-12)
    assert rows["uniform"]["tabular"]["std"] is not None  # two seeds, one row


def test_compare_on_the_validation_split(runs, cli, tmp_path):
    # choosing a setting without the test split: eval-subsets --split val, then compare --split val
    import shutil

    copies = [shutil.copytree(runs[k], tmp_path / k) for k in ("miam", "uniform")]
    for run in copies:
        code, _, err = cli("eval-subsets", run, "--device", "cpu", "--split", "val")
        assert code == 0, err
    code, out, err = cli("compare", *copies, "--split", "val", "--out", tmp_path / "cmp", "--json")
    assert code == 0, err
    rows = {r["strategy"]: r for r in json.loads(out)["rows"]}
    table = pd.read_csv(copies[0] / "eval" / "subsets.csv")
    val = table[table["split"] == "val"].set_index("subset")["auc"]
    assert rows["miam"]["image"]["mean"] == pytest.approx(float(val["image"]), abs=1e-12)
    assert set(table["split"]) == {"test", "val"}  # the test rows are kept beside the val rows
    assert rows["miam"]["image"]["mean"] != pytest.approx(auc(runs["miam"], "image"), abs=1e-12)
    code, out, err = cli("compare", runs["miam"], "--split", "val", "--out", tmp_path / "cmp2")
    assert code == 2 and "no rows for split 'val'" in err and "Traceback" not in err


def test_a_run_with_only_selector_rows_compares_on_what_both_have(runs, cli, tmp_path):
    # the README's order: eval-subsets on the MIAM run, then only selectors on the newest (uniform) run
    from conftest import copy_run

    miam, uniform = copy_run(runs["miam"], tmp_path / "miam"), copy_run(runs["uniform"], tmp_path / "uniform")
    run_eval_subsets(miam, subsets=["all", "image[band=red,nir]"])
    run_eval_subsets(uniform, subsets=["image[band=red,nir]", "series[year>=2003]"])
    selector = pd.read_csv(uniform / "eval" / "subsets.csv")["subset"].iloc[0]
    code, out, err = cli("compare", miam, uniform, "--out", tmp_path / "cmp", "--json")
    assert code == 0 and "Traceback" not in err, err
    doc = json.loads(out)
    assert doc["columns"] == [selector, "average"]
    rows = {r["strategy"]: r for r in doc["rows"]}
    for label, run in (("miam", miam), ("uniform", uniform)):
        value = float(pd.read_csv(run / "eval" / "subsets.csv").set_index("subset").loc[selector, "auc"])
        assert rows[label][selector]["mean"] == pytest.approx(value, abs=1e-12)
        assert rows[label]["average"]["mean"] == pytest.approx(value, abs=1e-12)  # the average of what both have
    assert doc["best"]["average"] == max(rows, key=lambda k: rows[k]["average"]["mean"])
    warnings = "\n".join(doc["warnings"])
    assert f"{uniform} was not evaluated on tabular" in warnings
    assert f"{miam} was not evaluated on series[year>=2003]" in warnings
    assert "left out 8 column(s)" in warnings
    # the table: warnings on stderr, a caption that claims neither a spread nor an oracle
    code, out, err = cli("compare", miam, uniform, "--out", tmp_path / "cmp")
    assert code == 0 and "warning:" in err and "not evaluated on tabular" in err
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "one run per row" in md and "±" not in md and "oracle" not in md
    assert "not evaluated on tabular" in md


def test_runs_that_share_no_input_are_refused_in_one_line(runs, cli, tmp_path):
    from conftest import copy_run

    a, b = copy_run(runs["miam"], tmp_path / "a"), copy_run(runs["uniform"], tmp_path / "b")
    run_eval_subsets(a, subsets=["unimodal"])
    run_eval_subsets(b, subsets=["image[band=red,nir]"])
    code, out, err = cli("compare", a, b, "--out", tmp_path / "cmp")
    assert code == 2 and "share no evaluated input" in err and "Traceback" not in err and out == ""


def test_caption_names_the_spread_and_the_oracle_only_when_there(runs, cli, tmp_path):
    code, _, err = cli("compare", runs["uniform"], runs["uniform-seed1"], runs["oracle"], "--out", tmp_path)
    assert code == 0, err
    md = (tmp_path / "compare.md").read_text()
    assert "mean ± std over the runs of a row (up to 2)" in md and "oracle = models trained on that input alone" in md
