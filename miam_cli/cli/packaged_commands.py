"""What ships inside the package: `miam recipes list | show | cp` and `miam docs`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from miam_cli.cli.common import log, out, print_json, print_table
from miam_cli.cli.options import App, JsonOut

recipes_app = App(help="The recipes shipped with miam: list them, print one, copy one to edit.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(recipes_app, name="recipes")
    app.command("docs")(docs_cmd)


@recipes_app.command("list")
def recipes_list_cmd(json_out: JsonOut = False) -> None:
    """The packaged recipes, by name; `miam train NAME` and `miam train recipes/NAME.yaml` use them.

    Example: miam recipes list
    """
    from miam_cli.packaged import recipe_summaries, recipes_dir

    rows = recipe_summaries()
    if json_out:
        print_json({"dir": str(recipes_dir()), "recipes": [{"name": n, "about": a, "file": str(recipes_dir() / f"{n}.yaml")} for n, a in rows]})
        return
    print_table(f"recipes in {recipes_dir()}", ["name", "about"], [list(r) for r in rows],
                "miam recipes cp NAME copies one here to edit; miam train NAME trains it as is")


@recipes_app.command("show")
def recipes_show_cmd(name: str = typer.Argument(..., help="A packaged recipe: demo, geoplant, taxabench, ...")) -> None:
    """Print a packaged recipe (its comments say how to prepare its store).

    Example: miam recipes show demo
    """
    from miam_cli.packaged import packaged_recipe

    path = packaged_recipe(name)
    log(f"# {path}")
    out.print(path.read_text(), end="", highlight=False, markup=False)


@recipes_app.command("cp")
def recipes_cp_cmd(
    name: str = typer.Argument(..., help="A packaged recipe: demo, geoplant, taxabench, ..."),
    dest: Optional[Path] = typer.Argument(None, help="File or folder to copy to [default: ./NAME.yaml]"),
    overwrite: bool = typer.Option(False, help="Replace DEST if it exists."),
) -> None:
    """Copy a packaged recipe to edit it (an existing file is kept unless --overwrite).

    Example: miam recipes cp demo my-demo.yaml && miam train my-demo.yaml
    """
    from miam_cli.packaged import copy_recipe

    target = copy_recipe(name, dest, overwrite)
    log(f"copied recipe {name} to {target}")
    out.print(str(target), highlight=False)


def docs_cmd(json_out: JsonOut = False) -> None:
    """Where the documentation of this installation is (the command reference, dataset specs, SLURM, results).

    Example: miam docs
    """
    from miam_cli.packaged import doc_files, docs_dir

    files = doc_files()
    if json_out:
        print_json({"dir": str(docs_dir().resolve()), "files": [str(f.resolve()) for f in files]})
        return
    print_table(f"documentation in {docs_dir().resolve()}", ["file", "about"], [[str(f.resolve()), _title(f)] for f in files])


def _title(path: Path) -> str:
    """A document's first heading."""
    first = next((line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")), "")
    return first.lstrip("# ").strip()
