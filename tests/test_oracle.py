"""`miam train RECIPE --oracle GROUP`: a model on one masking modality (or several) alone, with
uniform masking, named as an oracle, and shown by `compare` as the oracle row."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml


@pytest.fixture
def recipe(tiny_store, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"store": str(tiny_store), "model": {"d_model": 32},
                                    "masking": {"strategy": "miam"}, "train": {"epochs": 1, "batch_size": 128}}))
    return path


def test_oracle_trains_one_group_alone_with_uniform_masking(recipe, cli, tmp_path, monkeypatch, evaluated_run):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("train", recipe, "--oracle", "image")
    assert code == 0, err
    assert "oracle of image: trained on image alone, with uniform masking" in err
    (run,) = list((tmp_path / "runs").iterdir())
    assert run.name.startswith(f"{recipe_store_name(recipe)}-oracle-image-")
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["oracle"] == ["image"] and saved["masking"]["strategy"] == "uniform"
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["groups"] == {"image": ["image"]}
    # eval-subsets has the one subset; compare shows it as the oracle row, in the image column only
    assert cli("eval-subsets", run, "--device", "cpu")[0] == 0
    assert list(pd.read_csv(run / "eval" / "subsets.csv")["subset"]) == ["image"]
    code, out, err = cli("compare", evaluated_run, run, "--out", tmp_path / "cmp")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv", index_col="strategy")
    assert list(table.index) == ["miam", "oracle"]
    assert table.loc["oracle", "image_mean"] == pytest.approx(pd.read_csv(run / "eval" / "subsets.csv")["auc"][0])
    assert table.loc["oracle"].drop(["image_mean"]).filter(like="_mean").isna().all()


def recipe_store_name(recipe) -> str:
    return Path(yaml.safe_load(recipe.read_text())["store"]).name


def test_oracle_of_several_groups_and_an_unknown_group(recipe, cli, tmp_path):
    torch.set_num_threads(1)
    code, _, err = cli("train", recipe, "--oracle", "image,series", "--out", tmp_path / "two")
    assert code == 0, err
    ckpt = torch.load(tmp_path / "two" / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["groups"] == {"image": ["image"], "series": ["series"]}
    code, out, err = cli("train", recipe, "--oracle", "imag", "--out", tmp_path / "bad")
    assert code == 2 and "oracle: no masking modality 'imag' (did you mean 'image'?)" in err and "Traceback" not in err


def test_a_uniform_run_beside_an_oracle_keeps_its_plain_label(tiny_store, tiny_trainer, evaluated_run, cli, tmp_path):
    """An oracle is trained with uniform masking: the uniform row must not turn into `uniform (oracle=None)`."""
    from miam_cli.recipe import validate_recipe
    from miam_cli.engine.train import train
    from miam_cli.evaluate.subsets import run_eval_subsets

    uniform = tiny_trainer(tiny_store, tmp_path / "uniform", masking={"strategy": "uniform"}, epochs=1)
    oracle = train(validate_recipe({"store": str(tiny_store), "oracle": ["series"], "model": {"d_model": 32},
                                    "train": {"epochs": 1, "batch_size": 128}}), out=tmp_path / "oracle", log=lambda *a: None).run_dir
    for run in (uniform, oracle):
        run_eval_subsets(run)
    code, out, err = cli("compare", evaluated_run, uniform, oracle, "--out", tmp_path / "cmp", "--json")
    assert code == 0, err
    assert list(pd.read_csv(tmp_path / "cmp" / "compare.csv")["strategy"]) == ["miam", "uniform", "oracle"]
