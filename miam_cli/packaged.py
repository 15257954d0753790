"""Files shipped inside the package: recipes (and their sbatch scripts) and the documentation.

A pip user has no clone of the repository, so `miam train recipes/demo.yaml` (as the README types
it) and `miam train demo` find the packaged recipe when no such file exists where they are, and
`miam recipes cp NAME` gives them an editable copy, as torchtune's `tune cp` does. A file that
exists always wins: a user's own `recipes/demo.yaml` is never shadowed by the packaged one.

In a clone, `recipes/` and `docs/` of the repository are these same folders (`recipes` is a link
to `miam_cli/recipes`, `miam_cli/docs` a link to `docs`), so both ways of running agree.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from miam_cli.errors import UserError, did_you_mean

RECIPE_SUFFIXES = (".yaml", ".yml")


def recipes_dir() -> Path:
    return Path(str(resources.files("miam_cli") / "recipes"))


def docs_dir() -> Path:
    return Path(str(resources.files("miam_cli") / "docs"))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


@dataclass(frozen=True)
class RecipeFile:
    path: Path
    packaged: bool  # found among the packaged recipes, not where the user pointed


def find_recipe(arg: str | Path) -> RecipeFile:
    """An existing file as given; else the packaged recipe named `NAME`, `NAME.yaml` or `recipes/NAME.yaml`."""
    path = Path(arg)
    if path.is_file():
        return RecipeFile(path, False)
    packaged = _packaged_name(path)
    if packaged is not None and (recipes_dir() / f"{packaged}.yaml").is_file():
        return RecipeFile(recipes_dir() / f"{packaged}.yaml", True)
    if path.is_dir():
        raise UserError(f"{path}: a folder, not a recipe file")
    names = recipe_names()
    hint = did_you_mean(packaged, names) if packaged else ""
    raise UserError(f"{path}: no such recipe file, and no packaged recipe of that name{hint} "
                    f"(packaged: {', '.join(names)}; `miam recipes list`)")


def _packaged_name(path: Path) -> str | None:
    """`demo`, `demo.yaml` and `recipes/demo.yaml` name the packaged `demo`; other paths name none."""
    if len(path.parts) > 2 or (len(path.parts) == 2 and path.parts[0] != "recipes"):
        return None
    if path.suffix and path.suffix not in RECIPE_SUFFIXES:
        return None
    return path.stem


def packaged_recipe(name: str) -> Path:
    """The packaged recipe `name` (or `name.yaml`, `recipes/name.yaml`); a UserError naming the choices."""
    found = _packaged_name(Path(name))
    path = recipes_dir() / f"{found}.yaml"
    if found is None or not path.is_file():
        raise UserError(f"no packaged recipe {name!r}{did_you_mean(str(found or name), recipe_names())} "
                        f"(packaged: {', '.join(recipe_names())})")
    return path


def recipe_summaries() -> list[tuple[str, str]]:
    """(name, first comment line) of every packaged recipe: what `miam recipes list` shows."""
    rows = []
    for name in recipe_names():
        first = next((line.lstrip("# ").strip() for line in (recipes_dir() / f"{name}.yaml").read_text().splitlines()
                      if line.startswith("#")), "")
        rows.append((name, first))
    return rows


def copy_recipe(name: str, dest: Path | None = None, overwrite: bool = False) -> Path:
    """Copy a packaged recipe to `dest` (a file, or a folder to put NAME.yaml in; default ./NAME.yaml).
    An existing file is kept unless `overwrite`: a user's edits are never lost."""
    source = packaged_recipe(name)
    target = Path(dest) if dest is not None else Path(source.name)
    if target.is_dir():
        target = target / source.name
    if target.exists() and not overwrite:
        raise UserError(f"{target} exists; pass --overwrite to replace it, or name another DEST")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def doc_files() -> list[Path]:
    folder = docs_dir()
    if not folder.is_dir():
        raise UserError(f"{folder}: the documentation is not in this installation of miam")
    return sorted(folder.glob("*.md"))
