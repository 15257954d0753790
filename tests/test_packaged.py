"""Recipes and docs shipped in the package: found by name from any folder, listed, shown, copied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from miam_cli.errors import UserError
from miam_cli.packaged import find_recipe, recipes_dir

PACKAGED = Path(__file__).resolve().parents[1] / "miam_cli" / "recipes"


@pytest.fixture
def empty_dir(tmp_path, monkeypatch):
    """Where a pip user stands: no recipes/ folder, no docs/."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("typed", ["demo", "demo.yaml", "recipes/demo.yaml", "taxabench", "recipes/taxabench.yaml"])
def test_packaged_recipes_are_found_by_name_and_by_the_readme_path(empty_dir, typed):
    found = find_recipe(typed)
    assert found.packaged and found.path.samefile(PACKAGED / f"{Path(typed).stem}.yaml")


def test_a_file_that_exists_wins_over_the_packaged_one(empty_dir):
    (empty_dir / "recipes").mkdir()
    (empty_dir / "recipes" / "demo.yaml").write_text("store: mine\n")
    found = find_recipe("recipes/demo.yaml")
    assert not found.packaged and found.path == Path("recipes/demo.yaml")


@pytest.mark.parametrize("typed,message", [("dmeo", "did you mean 'demo'"), ("other/demo.yaml", "no such recipe file"),
                                           ("demo.txt", "no such recipe file")])
def test_unknown_recipes_name_the_packaged_ones(empty_dir, typed, message):
    with pytest.raises(UserError, match=message) as info:
        find_recipe(typed)
    assert "demo, geoplant, landscape, taxabench" in str(info.value)


def test_validate_from_an_empty_folder_says_which_file_and_prints_lambda(empty_dir, cli):
    code, out, err = cli("validate", "recipes/demo.yaml", "masking.lambda=2")
    assert code == 0, err
    assert f"recipe: {recipes_dir() / 'demo.yaml'} (packaged with miam" in err
    assert "  lambda: 2.0" in out and "lam:" not in out  # the key the recipe file uses
    code, _, err = cli("train", "nonesuch")
    assert code == 2 and "no such recipe file" in err and "Traceback" not in err


def test_recipes_list_show_and_cp(empty_dir, cli):
    code, out, err = cli("recipes", "list", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [r["name"] for r in doc["recipes"]] == sorted(p.stem for p in PACKAGED.glob("*.yaml"))
    assert next(r for r in doc["recipes"] if r["name"] == "demo")["about"].startswith("The demo recipe")

    code, out, _ = cli("recipes", "show", "taxabench")
    assert code == 0 and out == (PACKAGED / "taxabench.yaml").read_text()

    code, out, err = cli("recipes", "cp", "demo")
    assert code == 0 and out.strip() == "demo.yaml"
    assert (empty_dir / "demo.yaml").read_text() == (PACKAGED / "demo.yaml").read_text()
    (empty_dir / "demo.yaml").write_text("# edited\n" + (PACKAGED / "demo.yaml").read_text())
    code, _, err = cli("recipes", "cp", "demo")
    assert code == 2 and "exists" in err and (empty_dir / "demo.yaml").read_text().startswith("# edited")  # never lost
    (empty_dir / "mine").mkdir()
    code, out, _ = cli("recipes", "cp", "recipes/geoplant.yaml", "mine")
    assert code == 0 and (empty_dir / "mine" / "geoplant.yaml").exists()
    # the copy is what `validate demo.yaml` now uses: the local file, not the packaged one
    code, _, err = cli("validate", "demo.yaml")
    assert code == 0 and "recipe: demo.yaml\n" in err
    code, _, err = cli("recipes", "show", "nonesuch")
    assert code == 2 and "no packaged recipe 'nonesuch'" in err


def test_docs_are_reachable_from_the_package(empty_dir, cli):
    code, out, err = cli("docs", "--json")
    assert code == 0, err
    files = {Path(f).name: Path(f) for f in json.loads(out)["files"]}
    assert {"cli.md", "dataset-spec.md", "hpc.md", "architecture.md"} <= set(files)
    assert files["cli.md"].read_text().startswith("# `miam` command reference")


def test_usage_lines_name_arguments_in_capitals(cli):
    from miam_cli.cli.reference import render

    usages = [line for line in render().splitlines() if line.startswith("miam ")]
    assert len(usages) > 15 and not [u for u in usages if "{" in u or any(c.islower() for c in u.split("[OPTIONS]")[1])]
    code, out, _ = cli("train", "--help")
    assert code == 0 and "Usage: miam train [OPTIONS] RECIPE [OVERRIDES]..." in out
    # the example stands on its own lines, not run into the next sentence
    example = out[out.index("Example:"):].split("\n\n")[0]
    assert example.split() == "Example: miam train recipes/demo.yaml masking.strategy=uniform train.epochs=5 --out runs/demo-uniform".split()


def test_shell_completion_is_offered(cli):
    code, out, _ = cli("--help")
    assert code == 0 and "--install-completion" in out and "--show-completion" in out
