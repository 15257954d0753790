"""compare --paired: per-seed differences with Student-t intervals, verdicts, files and CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from miam_cli.evaluate.paired import interval, paired_comparison

SUBSETS = ["tab", "img", "tab+img"]


def fake_run(root, name, strategy, seed, values, groups=("tab", "img")):
    """A run dir with just what compare reads: recipe.yaml and eval/subsets.csv."""
    run = root / name
    (run / "eval").mkdir(parents=True)
    recipe = {"store": "s", "modalities": {g: [g] for g in groups}, "masking": {"strategy": strategy}, "train": {"seed": seed}}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    rows = [{"subset": s, "kind": "subset", "split": "test", "checkpoint": "best", "auc": v} for s, v in values.items()]
    pd.DataFrame(rows).to_csv(run / "eval" / "subsets.csv", index=False)
    return run


@pytest.fixture
def runs(tmp_path):
    """miam and dropout on seeds 0-4 (dropout also on seed 7, unpaired) and an img oracle.
    miam − dropout: +1.0..+2.0 points on `tab`, alternating ±1 on `img`, 0 on `tab+img`."""
    rng = np.random.default_rng(0)
    made = []
    tab_gain = [0.010, 0.020, 0.015, 0.012, 0.018]
    img_gain = [0.01, -0.01, 0.01, -0.01, 0.0]
    for seed in range(5):
        base = {"tab": 0.80 + rng.normal(0, 0.01), "img": 0.60 + rng.normal(0, 0.01), "tab+img": 0.82}
        made.append(fake_run(tmp_path, f"dropout-s{seed}", "dropout", seed, base))
        made.append(fake_run(tmp_path, f"miam-s{seed}", "miam", seed,
                             {"tab": base["tab"] + tab_gain[seed], "img": base["img"] + img_gain[seed], "tab+img": 0.82}))
    made.append(fake_run(tmp_path, "dropout-s7", "dropout", 7, {"tab": 0.1, "img": 0.1, "tab+img": 0.1}))
    made.append(fake_run(tmp_path, "oracle-img", "uniform", 0, {"img": 0.7}, groups=("img",)))
    return made, tab_gain, img_gain


def test_intervals_verdicts_and_pairing_by_seed(runs):
    made, tab_gain, img_gain = runs
    result = paired_comparison(made, "miam")
    assert result.columns == ["average", "tab", "img"]
    assert list(result.rows) == ["dropout"]  # the oracle has no row here
    cells = result.rows["dropout"]
    tab = cells["tab"]
    assert tab.seeds == 5 and tab.differences == pytest.approx(tab_gain)  # seed 7 has no partner
    half = stats.t.ppf(0.975, 4) * np.std(tab_gain, ddof=1) / np.sqrt(5)
    assert (tab.mean, tab.low, tab.high) == pytest.approx((np.mean(tab_gain), np.mean(tab_gain) - half, np.mean(tab_gain) + half))
    assert tab.verdict == "better"
    assert cells["img"].verdict == "tie" and cells["img"].differences == pytest.approx(img_gain)
    average = [(t + i) / 3 for t, i in zip(tab_gain, img_gain)]  # the third column's difference is 0
    assert cells["average"].differences == pytest.approx(average)
    flipped = paired_comparison(made, "dropout").rows["miam"]["tab"]
    assert flipped.verdict == "worse" and flipped.mean == pytest.approx(-tab.mean)


def test_interval_edge_cases():
    assert interval([0.02]).verdict == "n/a" and interval([0.02]).seeds == 1
    assert interval([]).seeds == 0
    assert interval([0.01, 0.01, 0.01]).verdict == "better"  # no spread: the interval is a point above 0


def test_cli_paired_writes_files_and_refuses_unknown_rows(runs, cli, tmp_path):
    made, tab_gain, _ = runs
    code, out, err = cli("compare", *made, "--out", tmp_path / "cmp", "--paired", "miam", "--json")
    assert code == 0, err
    doc = json.loads(out)
    tab = next(r for r in doc["paired"] if r["column"] == "tab")
    assert tab["verdict"] == "better" and tab["mean_difference"] == pytest.approx(np.mean(tab_gain))
    md = (tmp_path / "cmp" / "paired.md").read_text()
    assert "| dropout |" in md and "▲" in md and "5 paired seeds" in md
    assert len(pd.read_csv(tmp_path / "cmp" / "paired.csv")) == 3
    code, out, err = cli("compare", *made, "--out", tmp_path / "cmp2", "--paired", "nope")
    assert code == 2 and "no such row" in err and "Traceback" not in err
