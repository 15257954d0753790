"""eval-subsets: each subset's row equals the model run by hand with exactly those tokens visible."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from miam_cli.runs.checkpoint import load_model
from miam_cli.runs.rundir import store_path
from miam_cli.evaluate.subsets import run_eval_subsets
from miam_cli.store.reader import TokenStore
from miam_cli.synth.tokens import make_token_store

# the tiny store has 6 classes: F1@k and recall@k with k = 6 // 4 = 1
COLUMNS = ["subset", "kind", "modalities", "auc", "auc_classes", "f1_1", "recall_1", "visible_tokens", "samples",
           "split", "checkpoint"]
NUMERIC = ["auc", "auc_classes", "f1_1", "recall_1", "visible_tokens", "samples"]
PNG = b"\x89PNG\r\n\x1a\n"


def reference(run_dir, visible, split="test"):
    """The model by hand: keep = valid & visible, where `visible` maps store modality -> bool [T_m] (or True
    for every token); absent modalities are dropped. Returns (probabilities, targets, mean visible tokens)."""
    model, _ = load_model(run_dir, "best")
    store = TokenStore(store_path(run_dir))
    idx = store.split_indices(split)
    values, keep = {}, {}
    for m in model.layout.names:
        v, ok = store.read(m, idx)
        mask = np.zeros(ok.shape[1], bool) if m not in visible else np.broadcast_to(np.asarray(visible[m]), ok.shape[1:])
        values[m], keep[m] = torch.from_numpy(v), torch.from_numpy(ok & mask[None])
    with torch.no_grad():
        logits = model(values, keep).float()
    task = store.meta.task.type
    probs = (torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, 1)).numpy()
    shown = sum(int(k.sum()) for k in keep.values()) / len(idx)
    return probs, store.targets(idx), shown


def sklearn_macro_auc(y, p):
    scored = [c for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    return float(np.mean([roc_auc_score(y[:, c], p[:, c]) for c in scored])), len(scored)


def read_table(run_dir):
    return pd.read_csv(run_dir / "eval" / "subsets.csv")


# ------------------------------------------------------------------ all subsets


def test_every_subset_equals_the_model_with_exactly_its_tokens(evaluated_run):
    table = read_table(evaluated_run)
    groups = ["tabular", "image", "series"]  # the store's (and layout's) modality order
    expected = ["+".join(s) for k in (1, 2, 3) for s in itertools.combinations(groups, k)]
    assert len(table) == 2 ** 3 - 1
    assert list(table["subset"]) == expected == ["tabular", "image", "series", "tabular+image", "tabular+series",
                                                 "image+series", "tabular+image+series"]
    assert set(table["kind"]) == {"subset"}
    assert list(table["modalities"]) == expected
    assert set(table["split"]) == {"test"} and set(table["checkpoint"]) == {"best"}
    n_test = len(TokenStore(store_path(evaluated_run)).split_indices("test"))
    for _, row in table.iterrows():
        probs, y, shown = reference(evaluated_run, {m: True for m in row["subset"].split("+")})
        auc, n_classes = sklearn_macro_auc(y, probs)
        assert row["auc"] == pytest.approx(auc, abs=1e-6), row["subset"]
        assert row["auc_classes"] == n_classes
        assert row["visible_tokens"] == pytest.approx(shown, abs=1e-9)
        assert row["samples"] == n_test
    # bigger inputs show more tokens; the full input is the sum of the three alone
    vis = table.set_index("subset")["visible_tokens"]
    assert vis["tabular+image+series"] == pytest.approx(vis["tabular"] + vis["image"] + vis["series"])
    assert vis["tabular"] == 5 and vis["series"] == 6 and 0 < vis["image"] < 16  # ~10% of images missing
    # the model learned something: the full input beats chance and the planted dominant tabular view helps
    assert vis.index[table["auc"].argmax()] != "series"
    assert table.set_index("subset")["auc"]["tabular+image+series"] > 0.6


def test_files_schema_heatmap_and_json(evaluated_run):
    table = read_table(evaluated_run)
    assert list(table.columns) == COLUMNS
    doc = json.loads((evaluated_run / "eval" / "subsets.json").read_text())
    assert [r["subset"] for r in doc["rows"]] == list(table["subset"])
    for rec, (_, row) in zip(doc["rows"], table.iterrows()):
        assert list(rec) == COLUMNS
        for c in NUMERIC:
            assert rec[c] == pytest.approx(row[c], abs=1e-12)
    png = evaluated_run / "eval" / "subsets.png"
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 1000


def test_json_flag_prints_one_document_with_the_rows(run_copy, cli):
    code, out, err = cli("eval-subsets", run_copy, "--device", "cpu", "--json")
    assert code == 0
    doc = json.loads(out)  # stdout holds the JSON document and nothing else
    assert doc["file"] == str(run_copy / "eval" / "subsets.csv")
    table = read_table(run_copy)
    assert [r["subset"] for r in doc["rows"]] == list(table["subset"])
    for rec, (_, row) in zip(doc["rows"], table.iterrows()):
        assert set(rec) == set(COLUMNS)
        for c in NUMERIC:
            assert rec[c] == pytest.approx(row[c], abs=1e-9)
    assert "wrote" in err  # logs go to stderr


# ------------------------------------------------------------------ selectors


def test_selectors_show_only_the_selected_tokens(run_copy, cli):
    code, out, err = cli("eval-subsets", run_copy, "--device", "cpu", "--subsets", "image",
                         "--subsets", "image[band=red,nir]", "--subsets", "tabular + series[year=2003]")
    assert code == 0, err
    table = read_table(run_copy).set_index("subset")
    assert list(table.index) == ["image", "image[band=red,nir]", "tabular+series[year=2003]"]
    assert list(table["kind"]) == ["subset", "selector", "selector"]
    assert table.loc["image[band=red,nir]", "modalities"] == "image"
    assert table.loc["tabular+series[year=2003]", "modalities"] == "tabular+series"
    # 2 of the 4 bands: half the visible image tokens (an image is either all valid or all missing)
    assert table.loc["image[band=red,nir]", "visible_tokens"] == pytest.approx(table.loc["image", "visible_tokens"] / 2)
    assert table.loc["tabular+series[year=2003]", "visible_tokens"] == pytest.approx(5 + 1)

    band = np.repeat(np.arange(4), 4)  # token t = band * 4 + patch (row-major over band x patch)
    cases = {"image[band=red,nir]": {"image": np.isin(band, [0, 3])},
             "tabular+series[year=2003]": {"tabular": True, "series": np.arange(6) == 3}}
    for label, visible in cases.items():
        probs, y, shown = reference(run_copy, visible)
        assert table.loc[label, "auc"] == pytest.approx(sklearn_macro_auc(y, probs)[0], abs=1e-6)
        assert table.loc[label, "visible_tokens"] == pytest.approx(shown, abs=1e-9)
    assert "image[band" in out  # the table on stdout shows the selector (Rich did not eat "[...]" as markup)


@pytest.mark.parametrize("selector, name", [
    ("imagery", "imagery"),  # unknown modality
    ("image[bnd=red]", "bnd"),  # unknown axis
    ("image[band=purple]", "purple"),  # unknown value
    ("series[year=1999]", "1999"),  # unknown year
])
def test_bad_selector_is_refused_with_its_name(tiny_run, cli, selector, name):
    code, out, err = cli("eval-subsets", tiny_run, "--device", "cpu", "--subsets", selector)
    assert code == 2
    assert name in err and "error" in err
    assert "Traceback" not in err and out == ""
    assert not (tiny_run / "eval").exists()  # nothing written


# ------------------------------------------------------------------ shards


def _assert_same_table(a: pd.DataFrame, b: pd.DataFrame):
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for c in a.columns:
        if c in NUMERIC:
            np.testing.assert_allclose(a[c].to_numpy(float), b[c].to_numpy(float), rtol=0, atol=1e-9, err_msg=c)
        else:
            assert list(a[c]) == list(b[c]), c


def test_shards_merge_into_the_unsharded_table(evaluated_run, run_copy, cli):
    whole = read_table(evaluated_run)
    for i in range(3):
        code, _, err = cli("eval-subsets", run_copy, "--device", "cpu", "--shard", f"{i}/3")
        assert code == 0, err
        shard = pd.read_csv(run_copy / "eval" / "shards" / f"subsets-test-{i:03d}-of-003.csv")
        assert list(shard["subset"]) == list(whole["subset"])[i::3]
    assert not (run_copy / "eval" / "subsets.csv").exists()  # shards only write their own files
    code, out, err = cli("eval-subsets", run_copy, "--device", "cpu", "--merge", "--json")
    assert code == 0, err
    merged = read_table(run_copy)
    _assert_same_table(merged, whole)
    assert [r["subset"] for r in json.loads(out)["rows"]] == list(whole["subset"])
    assert (run_copy / "eval" / "subsets.png").read_bytes()[:8] == PNG


def test_more_shards_than_subsets(evaluated_run, run_copy, cli):
    """A SLURM array wider than the subset list: the spare shard writes an empty table, the merge still works."""
    for i in range(8):
        code, _, err = cli("eval-subsets", run_copy, "--device", "cpu", "--shard", f"{i}/8")
        assert code == 0, err
    assert len(pd.read_csv(run_copy / "eval" / "shards" / "subsets-test-007-of-008.csv")) == 0
    code, _, err = cli("eval-subsets", run_copy, "--device", "cpu", "--merge")
    assert code == 0, err
    _assert_same_table(read_table(run_copy), read_table(evaluated_run))


def test_merge_with_a_missing_shard_is_refused(run_copy, cli):
    cli("eval-subsets", run_copy, "--device", "cpu", "--shard", "0/3")
    code, _, err = cli("eval-subsets", run_copy, "--device", "cpu", "--merge")
    assert code == 2 and "1 of 3" in err and "Traceback" not in err


# ------------------------------------------------------------------ multi-class


def test_multiclass_store_gives_top1_and_top5(tmp_path, tiny_trainer):
    store = make_token_store(tmp_path / "store", n=500, task="multiclass", seed=3)
    run = tiny_trainer(store, tmp_path / "run", epochs=1)
    table, path = run_eval_subsets(run, subsets=["all"])
    assert list(table.columns) == ["subset", "kind", "modalities", "top1", "top5", "visible_tokens", "samples", "split",
                                   "checkpoint"]
    assert list(pd.read_csv(path).columns) == list(table.columns)
    assert len(table) == 7
    assert ((table["top1"] >= 0) & (table["top1"] <= table["top5"]) & (table["top5"] <= 1)).all()
    full = table.set_index("subset").loc["tabular+image+series"]
    probs, labels, _ = reference(run, {"tabular": True, "image": True, "series": True})
    order = np.argsort(-probs, axis=1)
    assert full["top1"] == pytest.approx(np.mean(order[:, 0] == labels), abs=1e-12)
    assert full["top5"] == pytest.approx(np.mean((order[:, :5] == labels[:, None]).any(1)), abs=1e-12)
    assert (run / "eval" / "subsets.png").read_bytes()[:8] == PNG
