"""`miam predict` and the `predict` split: unlabelled samples kept, `--like`, tables, GLC submissions, shards.

Probabilities are checked against the model run directly on the same tokens (evaluate.predict), and
the unlabelled points against the raw points table.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from miam_cli.data.custom import load_spec, plan_custom
from miam_cli.data.geoplant import GeoPlantOptions, plan_geoplant
from miam_cli.data.prepare import run_prepare
from miam_cli.errors import UserError
from miam_cli.evaluate.predict import group_visibility, predict as model_predict
from miam_cli.runs.loaded import open_run
from miam_cli.store.reader import TokenStore

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")


def expected_probs(run_dir: Path, split: str = "predict", visible=None) -> tuple[np.ndarray, np.ndarray]:
    """(sample ids, sigmoid of the model's logits) on a split of the run's store, straight from the evaluation code."""
    run = open_run(run_dir)
    data = run.split(split)
    logits = model_predict(run.model, data, visible).logits
    return run.store.samples["sample_id"].to_numpy()[data.indices], 1 / (1 + np.exp(-logits.astype(np.float64)))


# ================================================================ the predict split
def test_custom_points_without_labels_go_to_the_predict_split(landscape, landscape_store):
    points = pd.read_csv(landscape / "points.csv", keep_default_na=False)
    unlabelled = set(points.loc[points["species"] == "", "id"])
    store = TokenStore(landscape_store)
    samples = store.samples.set_index("sample_id")
    assert 10 < len(unlabelled) < 50
    assert set(samples.index[samples["split"] == "predict"]) == unlabelled
    assert store.meta.splits["predict"] == len(unlabelled) == store.meta.split["predict"]
    assert all(len(lab) == 0 for lab in samples.loc[sorted(unlabelled), "labels"])
    # `[]` is a survey where no species was found: labelled, with no class, in a labelled split
    empty = points.loc[points["species"] == "[]", "id"]
    assert len(empty) and set(samples.loc[empty, "split"]) <= {"train", "val", "test"}
    # the labelled points still fill train/val/test, and the split quotas ignore the unlabelled ones
    labelled = store.meta.splits["train"] + store.meta.splits["val"] + store.meta.splits["test"]
    assert labelled == len(points) - len(unlabelled)
    assert abs(store.meta.splits["train"] / labelled - 0.7) < 0.1


@pytest.mark.parametrize("labels, cells, counts", [
    ({"class": "c"}, {"c": ["a", None, "b", "a"]}, [1, 0, 1, 1]),
    ({"species": "s"}, {"s": ["a b", None, "[]", "b"]}, [2, 0, 0, 1]),  # `[]`: surveyed, nothing found
    ({"presence": ["p", "q"]}, {"p": [1, None, 0, 0], "q": [0, None, 0, 1]}, [1, 0, 0, 1]),  # all 0: an absence
])
def test_an_empty_label_cell_is_unlabelled_for_every_kind_of_label(tmp_path, labels, cells, counts):
    table = pd.DataFrame({"id": ["p1", "p2", "p3", "p4"], "lon": [1.0, 1.1, 1.2, 1.3], "lat": [45.0] * 4, **cells})
    table.to_csv(tmp_path / "points.csv", index=False)
    spec = {"points": {"path": "points.csv", "labels": labels, "split": {"fractions": [1.0, 0.0, 0.0]}},
            "modalities": {"where": {"kind": "location", "scales": 2}}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    plan, _ = plan_custom(load_spec(tmp_path / "spec.yaml"), tmp_path / "spec.yaml")
    assert list(plan.samples["split"]) == ["train", "predict", "train", "train"] and plan.split_info["predict"] == 1
    assert [len(lab) for lab in plan.samples["labels"]] == counts


def test_unlabelled_drop_leaves_them_out_and_says_so(landscape, tmp_path):
    spec = yaml.safe_load((landscape / "spec.yaml").read_text())
    spec["root"], spec["points"]["unlabelled"] = str(landscape), "drop"
    spec["allow_outside_root"] = True  # the data lives in the landscape folder, not beside this spec
    (tmp_path / "drop.yaml").write_text(yaml.safe_dump(spec))
    plan, _ = plan_custom(load_spec(tmp_path / "drop.yaml"), tmp_path / "drop.yaml")
    points = pd.read_csv(landscape / "points.csv", keep_default_na=False)
    assert "predict" not in set(plan.samples["split"])
    assert plan.dropped["point_without_labels"] == int((points["species"] == "").sum())
    assert len(plan.samples) == int((points["species"] != "").sum())


def test_geoplant_test_surveys_without_species_are_the_predict_split(tmp_path):
    from miam_cli.synth.geoplant import metadata_path, synth_geoplant

    raw = tmp_path / "raw"
    synth_geoplant(raw, surveys=40, species=4, seed=0)
    test_meta = pd.read_csv(metadata_path(raw, "test"))
    test_meta.drop(columns="speciesId").drop_duplicates("surveyId").to_csv(metadata_path(raw, "test"), index=False)  # as GLC ships it
    plan, decoder = plan_geoplant(raw, GeoPlantOptions())
    run_prepare(plan, decoder, tmp_path / "store", chunk_size=64)
    store = TokenStore(tmp_path / "store")
    samples = store.samples
    test_ids = set(test_meta["surveyId"].astype(str))
    assert set(samples.loc[samples["split"] == "predict", "sample_id"]) == test_ids
    assert store.meta.splits["predict"] == len(test_ids) and sum(store.meta.splits.values()) == 40
    # their files (PA_Test_... patches and cubes) were read: the modalities are there
    predict_rows = store.split_indices("predict")
    assert store.read_valid("sentinel2", predict_rows).any(axis=1).all()
    train_meta = pd.read_csv(metadata_path(raw, "train"))
    train_species = set(train_meta["speciesId"].dropna().map(lambda v: str(int(v))))
    assert set(store.classes["original_id"]) <= train_species
    assert store.report["splits"] == store.meta.splits
    # --like: the same files prepared for a model trained on that store; another patch grid is refused
    plan, _ = plan_geoplant(raw, GeoPlantOptions(like=tmp_path / "store"))
    assert plan.classes[["class_index", "original_id"]].equals(store.classes[["class_index", "original_id"]])
    assert plan.normalization == {m: s.normalization for m, s in store.meta.modalities.items()}
    with pytest.raises(UserError, match="modality sentinel2: axis patch is"):
        plan_geoplant(raw, GeoPlantOptions(like=tmp_path / "store", grid=2))


# ================================================================ --like
def test_like_reuses_classes_and_normalisation(landscape, landscape_store, tmp_path):
    points = pd.read_csv(landscape / "points.csv").iloc[:40].assign(species="")
    points.to_csv(tmp_path / "new.csv", index=False)
    spec = yaml.safe_load((landscape / "spec.yaml").read_text())
    spec.update(name="new", root=str(landscape), allow_outside_root=True)  # data beside the landscape, spec here
    spec["points"]["path"] = str(tmp_path / "new.csv")
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(spec))
    plan, decoder = plan_custom(load_spec(tmp_path / "new.yaml"), tmp_path / "new.yaml", like=landscape_store)
    run_prepare(plan, decoder, tmp_path / "store")
    new, old = TokenStore(tmp_path / "store"), TokenStore(landscape_store)
    assert new.meta.splits == {"train": 0, "val": 0, "test": 0, "predict": 40}
    assert new.classes[["class_index", "original_id"]].equals(old.classes[["class_index", "original_id"]])
    for m in ("env", "sentinel2"):
        assert new.meta.modalities[m].normalization == old.meta.modalities[m].normalization
    # the same point reads as the same normalised tokens in both stores
    first = old.samples.index[old.samples["sample_id"] == points["id"].iloc[0]][0]
    np.testing.assert_array_equal(new.read("sentinel2", np.array([0]))[0], old.read("sentinel2", np.array([first]))[0])


@pytest.mark.parametrize("change, expected", [
    (lambda m: m["sentinel2"].update(size=16), "modality sentinel2: 64 features per token in this dataset, 16 in --like"),
    (lambda m: m.pop("env"), "this dataset lacks modality env of --like"),
    (lambda m: m["env"]["files"].pop("bio12"), "modality env: axis variable is [bio1, elevation] (2) in this dataset, [bio1, bio12, elevation] (3)"),
])
def test_like_refuses_other_modalities_naming_the_difference(landscape, landscape_store, tmp_path, cli, change, expected):
    spec = yaml.safe_load((landscape / "spec.yaml").read_text())
    spec["root"], spec["allow_outside_root"] = str(landscape), True  # the data lives in the landscape folder
    change(spec["modalities"])
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(spec))
    code, _, err = cli("prepare", "custom", tmp_path / "other.yaml", tmp_path / "store", "--like", landscape_store)
    assert code == 2 and expected in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "store" / "store.json").exists()


# ================================================================ miam predict
def test_predict_writes_top_k_with_the_models_probabilities(landscape_run, landscape_store, tmp_path, cli):
    code, out, err = cli("predict", landscape_run, "--out", tmp_path / "p.parquet", "--top-k", "3")
    assert code == 0, err
    table = pd.read_parquet(tmp_path / "p.parquet")
    ids, probs = expected_probs(landscape_run)
    assert list(table.columns) == ["sample_id", "lon", "lat", "species_1", "prob_1", "species_2", "prob_2", "species_3", "prob_3"]
    assert list(table["sample_id"]) == list(ids)
    classes = TokenStore(landscape_store).classes["original_id"].to_numpy()
    order = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    for j in range(3):
        assert list(table[f"species_{j + 1}"]) == list(classes[order[:, j]])
        np.testing.assert_allclose(table[f"prob_{j + 1}"], np.take_along_axis(probs, order[:, j : j + 1], 1)[:, 0], atol=1e-6)
    assert (table["prob_1"] >= table["prob_2"]).all() and (table["prob_2"] >= table["prob_3"]).all()
    samples = TokenStore(landscape_store).samples.set_index("sample_id")
    np.testing.assert_array_equal(table["lon"], samples.loc[table["sample_id"], "lon"])


def test_predict_species_columns_with_a_subset_visible(landscape_run, tmp_path, cli):
    code, _, err = cli("predict", landscape_run, "--split", "test", "--species", "114,135", "--species", "100",
                       "--subsets", "sentinel2", "--format", "csv", "--out", tmp_path / "p.csv")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "p.csv", dtype={"sample_id": str})
    run = open_run(landscape_run)
    _, probs = expected_probs(landscape_run, "test", group_visibility(run.layout, "sentinel2"))
    index = {c: i for i, c in enumerate(run.store.classes["original_id"])}
    assert list(table.columns) == ["sample_id", "lon", "lat", "114", "135", "100"]
    for s in ("114", "135", "100"):
        np.testing.assert_allclose(table[s], probs[:, index[s]], atol=1e-6)
    _, all_visible = expected_probs(landscape_run, "test")
    assert np.abs(all_visible[:, index["114"]] - table["114"]).max() > 1e-3  # the subset did change the input


def test_predict_glc_submission(landscape_run, tmp_path, cli):
    code, _, err = cli("predict", landscape_run, "--format", "glc", "--top-k", "4", "--out", tmp_path / "sub.csv")
    assert code == 0, err
    text = (tmp_path / "sub.csv").read_text().splitlines()
    assert text[0] == "surveyId,predictions"
    ids, probs = expected_probs(landscape_run)
    classes = open_run(landscape_run).store.classes["original_id"].to_numpy()
    order = np.argsort(-probs, axis=1, kind="stable")
    assert text[1:] == [f"{i},{' '.join(classes[o[:4]])}" for i, o in zip(ids, order)]
    code, _, _ = cli("predict", landscape_run, "--format", "glc", "--threshold", "0.5", "--out", tmp_path / "t.csv")
    sub = pd.read_csv(tmp_path / "t.csv", dtype=str, keep_default_na=False)
    assert [len(p.split()) if p else 0 for p in sub["predictions"]] == list((probs >= 0.5).sum(axis=1))


def test_predict_shards_merge_into_the_unsharded_table(landscape_run, tmp_path, cli):
    assert cli("predict", landscape_run, "--split", "test", "--out", tmp_path / "all.parquet")[0] == 0
    for i in range(3):
        code, _, err = cli("predict", landscape_run, "--split", "test", "--out", tmp_path / "p.parquet", "--shard", f"{i}/3")
        assert code == 0 and "--merge" in err
    assert not (tmp_path / "p.parquet").exists()
    assert cli("predict", landscape_run, "--split", "test", "--out", tmp_path / "p.parquet", "--merge")[0] == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "p.parquet"), pd.read_parquet(tmp_path / "all.parquet"))


def test_predict_is_deterministic_and_streams_the_same_rows(landscape_run, tmp_path):
    from miam_cli import api

    run = api.load_run(landscape_run)
    first = api.predict(run, split="test", out=tmp_path / "a.parquet", batch_size=64)
    again = api.predict(run, split="test", out=tmp_path / "b.parquet", batch_size=100)
    from miam_cli.predict.run import PredictRequest, run_predict

    streamed = run_predict(run, PredictRequest(split="test", out=tmp_path / "c.parquet", max_bytes=0, batch_size=64))
    assert streamed.streamed and not first.streamed
    pd.testing.assert_frame_equal(first.table, again.table, check_exact=False, atol=1e-6, rtol=0)
    pd.testing.assert_frame_equal(first.table, streamed.table)
    assert (tmp_path / "a.parquet").read_bytes() == api.predict(run, split="test", out=tmp_path / "d.parquet", batch_size=64).path.read_bytes()


def test_predict_on_another_store_uses_the_runs_statistics(landscape_run, landscape_store, tmp_path, cli):
    """A copy of the store with other normalisation statistics gives the same probabilities."""
    copy = Path(shutil.copytree(landscape_store, tmp_path / "copy"))
    meta = json.loads((copy / "store.json").read_text())
    meta["modalities"]["env"]["normalization"]["mean"] = [0.0, 0.0, 0.0]
    (copy / "store.json").write_text(json.dumps(meta))
    assert cli("predict", landscape_run, "--split", "test", "--out", tmp_path / "own.parquet")[0] == 0
    assert cli("predict", landscape_run, copy, "--split", "test", "--out", tmp_path / "copy.parquet")[0] == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "own.parquet"), pd.read_parquet(tmp_path / "copy.parquet"))


@pytest.mark.parametrize("args, expected", [
    (["--species", "999"], "--species '999': not a class index, id or name"),
    (["--format", "xml"], "--format 'xml': choose one of parquet, csv, glc"),
    (["--subsets", "landsat"], "landsat"),
])
def test_predict_refuses_bad_input(landscape_run, tmp_path, cli, args, expected):
    code, _, err = cli("predict", landscape_run, "--out", tmp_path / "p.parquet", *args)
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "p.parquet").exists()


def test_predict_without_a_predict_split_says_so(tiny_run, tmp_path, cli):
    code, _, err = cli("predict", tiny_run, "--out", tmp_path / "p.parquet")
    assert code == 2 and "has no predict split" in err and "--split" in err
    code, _, err = cli("predict", tiny_run, "--split", "test", "--out", tmp_path / "p.parquet")
    assert code == 0, err
    assert len(pd.read_parquet(tmp_path / "p.parquet")) == TokenStore(open_run(tiny_run).store.path).meta.splits["test"]


def test_predict_refuses_a_store_with_other_modalities(landscape_run, tiny_store, tmp_path, cli):
    code, _, err = cli("predict", landscape_run, tiny_store, "--split", "test", "--out", tmp_path / "p.parquet")
    assert code == 2 and "lacks modalities env, sentinel2" in err
