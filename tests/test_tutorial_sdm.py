"""docs/tutorial-sdm.md runs as written, from an empty folder, and its outputs show what it says."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial-sdm.md"
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")


def tutorial_commands() -> list[list[str]]:
    """The first bash block's commands, comments dropped, each split as a shell would."""
    block = TUTORIAL.read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_the_tutorial_runs_as_written(cli, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    outputs = {}
    for argv in tutorial_commands():
        assert argv[0] == "miam", argv
        code, out, err = cli(*argv[1:])
        assert code == 0, f"{shlex.join(argv)} failed:\n{err}"
        outputs[shlex.join(argv[1:])] = out
    # 2: per-split presence rates printed, each within 2 points of the overall 30%
    store = tmp_path / "stores" / "points"
    labels = json.loads((store / "prepare-report.json").read_text())["labels"]
    assert labels["all"]["positive_rate"] == pytest.approx(0.3)
    assert all(abs(labels[s]["positive_rate"] - 0.3) < 0.02 for s in ("train", "val", "test"))
    assert "labels per split" in outputs["prepare custom data/points/spec.yaml"]
    # 3: the oracle is marked and trained on soil alone with uniform masking
    oracle = yaml.safe_load((tmp_path / "runs/oracle-soil/recipe.yaml").read_text())
    assert oracle["oracle"] == ["soil"] and oracle["masking"]["strategy"] == "uniform"
    # 4: the one-class metric set, every subset
    table = pd.read_csv(tmp_path / "runs/miam/eval/subsets.csv")
    assert [c for c in table.columns if c in ("auc", "auprc", "tss", "f1_25", "recall_25")] == ["auc", "auprc", "tss"]
    assert len(table) == 7 and table.set_index("subset").loc["climate+terrain+soil", "auc"] > 0.7
    # the planted truth: each group informative alone, climate the strongest
    alone = table.set_index("subset")["auc"]
    assert alone["climate"] > max(alone["terrain"], alone["soil"]) and min(alone["terrain"], alone["soil"]) > 0.55
    # 5: compare shows MIAM and the oracle row
    compare = pd.read_csv(tmp_path / "compare" / "compare.csv", index_col="strategy")
    assert list(compare.index) == ["miam", "oracle"] and compare.loc["oracle", "soil_mean"] > 0.55
    # 6: modalities exact from the table; climate by variable under the documented file name
    modalities = json.loads((tmp_path / "runs/miam/attribution/modalities-global-test.json").read_text())
    assert modalities["result"]["reused"] == 7 and modalities["result"]["evaluations"] == 1
    assert re.search(r"1 coalition evaluated, 7 reused from eval/subsets\.csv", " ".join(outputs["attribute runs/miam"].split()))
    assert (tmp_path / "runs/miam/attribution/climate-by-variable-global-context-all-test.csv").exists()
