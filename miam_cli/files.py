"""Reading the small text files users write (recipes, dataset specs) and the JSON files miam writes,
with every way a file can be unusable turned into a `UserError` that names it and never quotes it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from miam_cli.errors import UserError


def read_yaml(path: Path, what: str):
    """A YAML file's content (safe loader: tags that would build Python objects are refused); every
    way the file can be unusable — absent, a folder, not UTF-8, not YAML — is a UserError naming it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such {what} file")
    if not path.is_file():
        raise UserError(f"{path}: a {what} is a YAML file, not a folder")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}); a {what} is a YAML text file") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({yaml_problem(e)})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read the {what} ({e.strerror})") from None


def yaml_problem(e: yaml.YAMLError) -> str:
    """Where and what, without quoting the file's text (`problem_mark` is a line and column)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or type(e).__name__
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(problem)


def read_json(path: Path, what: str):
    """A JSON file miam wrote (env.json, shard files); damaged or absent is a UserError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what} file") from None
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: unreadable {what} ({type(e).__name__})") from None


def writable_file(path: Path, what: str) -> Path:
    """`path`, a file miam is about to write: its folder is created (see `writable_folder`), and a folder
    in its place is a UserError naming it, before any work is done."""
    path = Path(path)
    above = next((p for p in path.parents if p.exists()), None)  # the first that exists must be a folder
    if above is not None and not above.is_dir():
        raise UserError(f"{above}: is a file, not a folder ({what} {path})")
    writable_folder(path.parent, f"folder of the {what}")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a file (the {what} to write)")
    return path


def writable_folder(path: Path, what: str) -> Path:
    """Create `path` (a folder miam writes into) if needed; a file in its place, or a folder that
    cannot be written, is a UserError naming it, before any work is done."""
    path = Path(path)
    for p in [path, *path.parents]:  # the first that exists must be a folder
        if p.exists():
            if not p.is_dir():
                raise UserError(f"{p}: is a file, not a folder ({what} {path})")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path}: cannot create the {what} ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{path}: the {what} is not writable (read-only)")
    return path


UNFINISHED = ".miam-unfinished"  # in a folder a generator (`miam synth`) is still writing: removed when it is complete


def unfinished_generator(folder: Path) -> str | None:
    """The generator whose output in `folder` is unfinished (named in its marker), else None."""
    marker = Path(folder) / UNFINISHED
    if not marker.is_file():
        return None
    try:
        return marker.read_text(encoding="utf-8").strip() or "miam synth"
    except (OSError, UnicodeDecodeError):  # a marker that cannot be read still marks the folder
        return "miam synth"


def refuse_unfinished(folder: Path) -> None:
    """A `miam synth` output that was interrupted is refused (its files are partial), naming the generator to rerun."""
    generator = unfinished_generator(folder)
    if generator is not None:
        raise UserError(f"{folder}: an unfinished `{generator}` output (it was interrupted; {UNFINISHED} is there): "
                        f"run `{generator}` into it again")
