"""The fault-injection campaign: every case runs a `miam` command on damaged or hostile input and is
judged on what a user (and their data) would see.

A case builds its input in a fresh folder from a shared baseline (synthetic GeoPlant files, the store
prepared from them, a tiny trained run, a small custom dataset), runs one command in-process, and is
classified:

- **traceback**: a Python traceback reached the user, an exception escaped the CLI, click printed
  its bare "Aborted!", or the last-resort handler reported an *unexpected* error (a bug);
- **lost**: data already written was destroyed or left inconsistent (a checkpoint, a store);
- **silent**: corrupt input was accepted without a word (exit 0, nothing counted or refused);
- **handled**: the expected exit code (0 with the fault counted, 1 for a runtime failure, 2 for refused
  input), the message naming what it must name, and the data intact.

`tests/test_faults.py` runs the fast cases in `make test` and the slow ones (kill points, a real full
disk on a tmpfs, bit flips) under `make test-slow`; `benchmarks/fault_suite.py` runs them all and
prints the table. Cases use plain file operations on the synthetic layout, not miam's own writers,
so that a fault is what a user's disk or a hostile file would really hold.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import yaml

MARKER = "miam-fault-suite-code-ran"  # a file a malicious pickle or YAML tag would create


# ================================================================ the baseline, built once
@dataclass
class Base:
    root: Path
    raw: Path  # synthetic GeoPlant, GLC24 layout
    store: Path  # prepared from raw (chunks of 16 surveys)
    run: Path  # a tiny model trained on store, 2 epochs
    recipe: Path  # the run's recipe (store path absolute)
    custom: Path  # a small custom dataset: spec.yaml, points.csv, arrays/<id>.npy

    def copy(self, what: str, dest: Path) -> Path:
        shutil.copytree(getattr(self, what), dest, symlinks=True)
        return dest


RECIPE = {"model": {"d_model": 8, "depth": 1, "heads": 2}, "masking": {"strategy": "miam"},
          "train": {"epochs": 2, "batch_size": 16, "seed": 0, "device": "cpu"}}


def build_base(root: Path, surveys: int = 40) -> Base:
    """Synthesise, prepare and train the baseline every case starts from, through the CLI as the cases
    run (about a minute on 2 cores)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    (root / "recipe.yaml").write_text(yaml.safe_dump({"store": str(root / "store"), **RECIPE}))
    for argv in (["synth", "geoplant", root / "raw", "--surveys", surveys, "--species", 6, "--seed", 0],
                 ["prepare", "geoplant", root / "raw", root / "store", "--chunk-size", 16],
                 ["train", root / "recipe.yaml", "--out", root / "run"]):
        result = run_cli(argv, root)
        if result.code != 0:
            raise RuntimeError(f"baseline step {argv[:2]} failed: {result.err[-1000:]}")
    return Base(root, root / "raw", root / "store", root / "run", root / "recipe.yaml", _custom_dataset(root / "custom", surveys))


def _custom_dataset(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    (folder / "arrays").mkdir(parents=True)
    ids = [f"p{i:03d}" for i in range(n)]
    pd.DataFrame({"id": ids, "lon": rng.uniform(2, 6, n), "lat": rng.uniform(43, 48, n),
                  "species": [" ".join(map(str, rng.choice(5, 2, replace=False))) for _ in ids],
                  "t1": rng.normal(size=n), "t2": rng.normal(size=n)}).to_csv(folder / "points.csv", index=False)
    for i in ids:
        np.save(folder / "arrays" / f"{i}.npy", rng.normal(size=(3, 4)).astype(np.float32))
    spec = {"name": "fault-custom", "points": {"path": "points.csv", "labels": {"species": "species"}},
            "modalities": {"tab": {"kind": "columns", "columns": ["t1", "t2"]},
                           "cube": {"kind": "files", "pattern": "arrays/{id}.npy"}}}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


# ================================================================ cases and outcomes
@dataclass
class Result:
    code: int | None
    out: str
    err: str
    escaped: BaseException | None = None
    seconds: float = 0.0

    @property
    def text(self) -> str:
        return self.out + self.err


@dataclass
class Case:
    name: str
    group: str
    setup: Callable[[Base, Path], list]  # builds the faulty input in the case folder; returns the argv of `miam`
    expect: int | None  # exit code: 0 (the fault is counted), 1 (runtime failure), 2 (refused); None: any (a crash)
    says: tuple[str, ...] = ()  # what the message must name (a file, a key)
    check: Callable[[Base, Path, Result], str | None] | None = None  # "lost: ..." / "silent: ..." / other, or None
    patch: Callable[[Path], contextlib.AbstractContextManager] | None = None  # in-process fault injection
    fast: bool = True  # part of `make test`
    runner: Callable[[list, Path], Result] | None = None  # how the command runs (default: in-process)


@dataclass
class Verdict:
    case: Case
    result: Result
    outcome: str  # handled | traceback | lost | silent | mishandled | skipped (could not be tried here)
    why: str = ""


def run_cli(argv: list, folder: Path, patch=None) -> Result:
    """`miam ARGV` in-process in `folder`, with stdout/stderr captured and crash logs kept in the folder."""
    from miam_cli.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    cwd, start = os.getcwd(), time.monotonic()
    old_log = os.environ.get("MIAM_LOG_DIR")
    os.environ["MIAM_LOG_DIR"] = str(folder / "crash-logs")
    code, escaped = None, None
    try:
        os.chdir(folder)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), (patch(folder) if patch else contextlib.nullcontext()):
            try:
                main([str(a) for a in argv])
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 - anything escaping the CLI is what we are looking for
        escaped = e
    finally:
        os.chdir(cwd)
        if old_log is None:
            os.environ.pop("MIAM_LOG_DIR", None)
        else:
            os.environ["MIAM_LOG_DIR"] = old_log
    return Result(code, out.getvalue(), err.getvalue(), escaped, time.monotonic() - start)


def judge(case: Case, base: Base, folder: Path, result: Result) -> Verdict:
    text = result.text
    if result.err.startswith("skipped:"):
        return Verdict(case, result, "skipped", result.err)
    if result.escaped is not None or "Traceback (most recent call last)" in text or "Aborted!" in text or ": unexpected " in text:
        why = repr(result.escaped) if result.escaped is not None else _line_with(text, ("Traceback", "Aborted!", "unexpected"))
        return Verdict(case, result, "traceback", why)
    if (folder / MARKER).exists() or (base.root / MARKER).exists():
        return Verdict(case, result, "lost", "code from a file ran")
    problem = case.check(base, folder, result) if case.check else None
    if problem and problem.startswith(("lost", "silent")):
        return Verdict(case, result, problem.split(":")[0], problem)
    if case.expect is not None and result.code != case.expect:
        outcome = "silent" if result.code == 0 and case.expect != 0 else "mishandled"
        return Verdict(case, result, outcome, f"exit {result.code}, expected {case.expect}: {text.strip()[-300:]}")
    missing = [s for s in case.says if s not in text]
    if missing:
        return Verdict(case, result, "mishandled", f"message does not name {missing}: {text.strip()[-300:]}")
    if problem:
        return Verdict(case, result, "mishandled", problem)
    return Verdict(case, result, "handled")


def _line_with(text: str, words) -> str:
    return next((line for line in text.splitlines() if any(w in line for w in words)), text[-200:])


def run_case(case: Case, base: Base, folder: Path) -> Verdict:
    folder.mkdir(parents=True, exist_ok=True)
    argv = case.setup(base, folder)
    result = case.runner(argv, folder) if case.runner else run_cli(argv, folder, case.patch)
    return judge(case, base, folder, result)


# ================================================================ helpers the cases share
def _meta(raw: Path) -> Path:
    return raw / "GLC24_PA_metadata_train.csv"


def _edit_csv(path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(df).to_csv(path, index=False)


def _env_csv(raw: Path, name: str = "bioclimatic") -> Path:
    return next(raw.glob(f"EnvironmentalData/**/GLC24-PA-train-{name}.csv"))


def _first(raw: Path, pattern: str) -> Path:
    return sorted(raw.glob(pattern))[0]


def _set_survey(column: str, value: str, which: int = 0):
    """An edit of the metadata: `column` = `value` on every row of the `which`-th survey."""
    def edit(df):
        sid = sorted(df["surveyId"].unique())[which]
        df.loc[df["surveyId"] == sid, column] = value
        return df
    return edit


def _report(folder: Path, store: str = "s") -> dict:
    path = folder / store / "prepare-report.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _counted(kind: str, where: str = "counts", at_least: int = 1):
    """Check: the prepared store's report counts `kind` (a fault or a drop), else the fault was silent."""
    def check(base, folder, result):
        n = _report(folder).get(where, {}).get(kind, 0)
        return None if n >= at_least else f"silent: {kind} not counted in prepare-report.json ({where}: {_report(folder).get(where)})"
    return check


def _prepare_raw(edit: Callable[[Path], None], *extra):
    """A case setup: copy the raw files, damage them with `edit`, prepare them into `s`."""
    def setup(base, folder):
        raw = base.copy("raw", folder / "raw")
        edit(raw)
        return ["prepare", "geoplant", raw, folder / "s", "--chunk-size", "16", *extra]
    return setup


def _malicious_pickle(path: Path, folder: Path) -> None:
    """A file that runs code when unpickled without weights_only (it would create MARKER)."""
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {folder / MARKER}",))
    with open(path, "wb") as f:
        pickle.dump({"model": Evil()}, f)


# ---------------------------------------------------------------- raw GeoPlant data
def _raw_cases() -> list[Case]:
    def empty_metadata(raw):
        _meta(raw).write_bytes(b"")

    def binary_metadata(raw):
        _meta(raw).write_bytes(bytes(range(256)) * 4)

    def no_survey_column(raw):
        _edit_csv(_meta(raw), lambda df: df.drop(columns=["surveyId"]))

    def bad_cell(raw):
        _edit_csv(_env_csv(raw), lambda df: df.assign(**{df.columns[3]: [df.iloc[0, 3].replace(df.iloc[0, 3], "abc")] + list(df.iloc[1:, 3])}))

    def conflicting_env(raw):
        def edit(df):
            row = df.iloc[[1]].copy()
            row.iloc[0, 2] = "999"
            return pd.concat([df, row], ignore_index=True)
        _edit_csv(_env_csv(raw), edit)

    def identical_env_duplicate(raw):
        _edit_csv(_env_csv(raw), lambda df: pd.concat([df, df.iloc[[2]]], ignore_index=True))

    def conflicting_survey(raw):
        def edit(df):
            sid = sorted(df["surveyId"].unique())[3]
            row = df[df["surveyId"] == sid].iloc[[0]].copy()
            row["lon"] = "7.777"
            return pd.concat([df, row], ignore_index=True)
        _edit_csv(_meta(raw), edit)

    def path_id(raw):
        def edit(df):
            row = df.iloc[[0]].copy()
            row["surveyId"] = str(raw.parent / "secret" / "0385")
            return pd.concat([df, row], ignore_index=True)
        (raw.parent / "secret").mkdir()
        (raw.parent / "secret" / "0385.jpeg").write_bytes(b"not yours")
        _edit_csv(_meta(raw), edit)

    def symlink_out(raw):
        secret = raw.parent / "secret.jpeg"
        shutil.copy(_first(raw, "PA_Train_SatellitePatches_RGB/**/*.jpeg"), secret)
        target = _first(raw, "PA_Train_SatellitePatches_RGB/**/*.jpeg")
        target.unlink()
        target.symlink_to(secret)

    def env_symlink_out(raw):
        env = _env_csv(raw, "elevation")
        outside = raw.parent / "elevation.csv"
        shutil.move(env, outside)
        env.symlink_to(outside)

    def truncated_jpeg(raw):
        p = _first(raw, "PA_Train_SatellitePatches_RGB/**/*.jpeg")
        p.write_bytes(p.read_bytes()[:100])

    def missing_jpeg(raw):
        _first(raw, "PA_Train_SatellitePatches_NIR/**/*.jpeg").unlink()

    def evil_cube(raw):
        _malicious_pickle(_first(raw, "TimeSeries-Cubes/**/*landsat*_cube.pt"), raw.parent)

    def wrong_cube(raw):
        torch.save(torch.zeros(6, 4, 20), _first(raw, "TimeSeries-Cubes/**/*landsat*_cube.pt"))

    def nan_cube(raw):
        p = _first(raw, "TimeSeries-Cubes/**/*bioclim*_cube.pt")
        cube = torch.load(p, weights_only=True).contiguous()
        cube[0, 0, 0] = float("nan")
        torch.save(cube, p)

    def zero_byte_cube(raw):
        _first(raw, "TimeSeries-Cubes/**/*landsat*_cube.pt").write_bytes(b"")

    def env_empty(raw):
        _env_csv(raw, "elevation").write_bytes(b"")

    def env_no_survey(raw):
        _edit_csv(_env_csv(raw, "elevation"), lambda df: df.rename(columns={"surveyId": "id"}))

    def two_faults_two_chunks(raw):
        jpegs = sorted(raw.glob("PA_Train_SatellitePatches_RGB/**/*.jpeg"))
        jpegs[0].unlink()
        jpegs[-1].unlink()

    def strict_check(base, folder, result):
        lines = [line for line in result.err.splitlines() if "missing_file" in line and "sample" in line]
        return None if len(lines) >= 2 else f"--strict listed {len(lines)} of the faults"

    def dropped(kind):
        return _counted(kind, "dropped")

    nothing = lambda raw: None  # noqa: E731
    cases = [
        Case("empty metadata CSV", "raw data", _prepare_raw(empty_metadata), 2, ("GLC24_PA_metadata_train.csv",)),
        Case("binary metadata CSV", "raw data", _prepare_raw(binary_metadata), 2, ("GLC24_PA_metadata_train.csv",)),
        Case("metadata without surveyId", "raw data", _prepare_raw(no_survey_column), 2, ("surveyId",)),
        Case("'abc' in one environmental cell", "raw data", _prepare_raw(bad_cell), 0, (),
             lambda b, f, r: _counted("bad_value")(b, f, r) or _tabular_kept(b, f)),
        Case("conflicting duplicate environment row", "raw data", _prepare_raw(conflicting_env), 0, (), _counted("conflicting_rows")),
        Case("identical duplicate environment row", "raw data", _prepare_raw(identical_env_duplicate), 0, (),
             lambda b, f, r: "silent: an identical duplicate was called a conflict" if _report(f).get("counts", {}).get("conflicting_rows") else None,
             fast=False),
        Case("conflicting duplicate survey rows", "raw data", _prepare_raw(conflicting_survey), 0, (), dropped("survey_with_conflicting_rows")),
        Case("lat=95", "raw data", _prepare_raw(lambda raw: _edit_csv(_meta(raw), _set_survey("lat", "95"))), 0, (),
             dropped("survey_with_coordinates_out_of_range")),
        Case("lon=inf", "raw data", _prepare_raw(lambda raw: _edit_csv(_meta(raw), _set_survey("lon", "inf"))), 0, (),
             dropped("survey_with_coordinates_out_of_range"), fast=False),
        Case("lon=1e300", "raw data", _prepare_raw(lambda raw: _edit_csv(_meta(raw), _set_survey("lon", "1e300"))), 0, (),
             dropped("survey_with_coordinates_out_of_range"), fast=False),
        Case("lon is text", "raw data", _prepare_raw(lambda raw: _edit_csv(_meta(raw), _set_survey("lon", "east"))), 0, (),
             dropped("survey_without_coordinates"), fast=False),
        Case("surveyId that is an absolute path", "paths", _prepare_raw(path_id), 0, (), dropped("survey_with_invalid_id")),
        Case("patch symlinked outside the raw folder", "paths", _prepare_raw(symlink_out), 0, (), _counted("outside_root")),
        Case("environment CSV symlinked outside", "paths", _prepare_raw(env_symlink_out), 2, ("outside",)),
        Case("environment symlink allowed by --allow-outside-root", "paths", _prepare_raw(env_symlink_out, "--allow-outside-root"), 0,
             fast=False),
        Case("truncated JPEG", "raw data", _prepare_raw(truncated_jpeg), 0, (), _counted("corrupt_file"), fast=False),
        Case("missing NIR JPEG", "raw data", _prepare_raw(missing_jpeg), 0, (), _counted("missing_file"), fast=False),
        Case("malicious pickle as a cube", "raw data", _prepare_raw(evil_cube), 0, (), _counted("corrupt_file"), fast=False),
        Case("cube of the wrong shape", "raw data", _prepare_raw(wrong_cube), 0, (), _counted("wrong_shape"), fast=False),
        Case("NaN in a cube", "raw data", _prepare_raw(nan_cube), 0, (), _counted("nan_values"), fast=False),
        Case("0-byte cube", "raw data", _prepare_raw(zero_byte_cube), 0, (), _counted("corrupt_file"), fast=False),
        Case("empty environment CSV", "raw data", _prepare_raw(env_empty), 2, ("elevation.csv",)),
        Case("environment CSV without surveyId", "raw data", _prepare_raw(env_no_survey), 2, ("elevation.csv",), fast=False),
        Case("--strict lists the faults of every chunk", "raw data", _prepare_raw(two_faults_two_chunks, "--strict"), 2, ("--strict",),
             strict_check),
        Case("prepare --split bogus", "cli", _prepare_raw(nothing, "--split", "bogus"), 2, ("--split",)),
        Case("prepare --layout bogus", "cli", _prepare_raw(nothing, "--layout", "bogus"), 2, ("--layout",)),
        Case("--chunk-size 99999999", "resources", _prepare_raw(nothing, "--chunk-size", "99999999"), 2, ("chunk-size",)),
        Case("--chunk-size 0", "resources", _prepare_raw(nothing, "--chunk-size", "0"), 2, ("chunk-size",)),
        Case("--chunk-size above the sample count is capped", "resources", _prepare_raw(nothing, "--chunk-size", "100000"), 0,
             check=lambda b, f, r: None if _chunk_rows(f / "s") <= 40 else f"chunk of {_chunk_rows(f / 's')} rows", fast=False),
        Case("--shard 5/2", "cli", _prepare_raw(nothing, "--shard", "5/2"), 2, ("--shard",)),
        Case("raw dir does not exist", "cli", lambda b, f: ["prepare", "geoplant", f / "nope", f / "s"], 2, ("nope",)),
        Case("store path is a file", "cli", lambda b, f: (f.joinpath("s").write_text("x"), ["prepare", "geoplant", b.raw, f / "s"])[1],
             2, ("is a file",)),
        Case("store path under a file", "cli", lambda b, f: (f.joinpath("f").write_text("x"), ["prepare", "geoplant", b.raw, f / "f" / "s"])[1],
             2, ("is a file",)),
        Case("taxabench prepare on GeoPlant files", "cli", lambda b, f: ["prepare", "taxabench", b.raw, f / "s"], 2, ("test_df.csv",)),
    ]
    return cases


def _tabular_kept(base: Base, folder: Path) -> str | None:
    meta = json.loads((folder / "s" / "store.json").read_text())
    ref = json.loads((base.store / "store.json").read_text())
    got, want = meta["modalities"]["tabular"]["tokens"], ref["modalities"]["tabular"]["tokens"]
    return None if got == want else f"silent: {want - got} variable(s) dropped for every survey"


def _chunk_rows(store: Path) -> int:
    import zarr

    return zarr.open_group(store / "tokens.zarr", mode="r")["sentinel2/values"].chunks[0]


# ---------------------------------------------------------------- custom dataset specs
def _spec_case(edit: Callable[[dict, Path], None], files: Callable[[Path], None] | None = None):
    def setup(base, folder):
        data = base.copy("custom", folder / "data")
        spec = yaml.safe_load((data / "spec.yaml").read_text())
        if files:
            files(data)
        edit(spec, data)
        (data / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        return ["prepare", "custom", data / "spec.yaml", folder / "s"]
    return setup


def _secret(folder: Path) -> Path:
    """A file outside the dataset's folder whose first line must never appear in a message."""
    p = folder / "secret.csv"
    p.write_text("TOPSECRET-LINE,id,lon,lat,species\n1,1,1,1,1\n")
    return p


def _never_quoted(base, folder, result):
    return "lost: a file's content was quoted in the message" if "TOPSECRET" in result.text else None


def _spec_cases() -> list[Case]:
    def points_outside(spec, data):
        spec["points"]["path"] = str(_secret(data.parent))

    def pattern_outside(spec, data):
        outside = data.parent / "elsewhere"
        shutil.copytree(data / "arrays", outside)
        spec["modalities"]["cube"]["pattern"] = str(outside / "{id}.npy")

    def root_outside(spec, data):
        spec["root"] = "../.."

    def symlink_array(data):
        secret = data.parent / "secret.npy"
        np.save(secret, np.ones((3, 4), np.float32))
        victim = sorted((data / "arrays").glob("*.npy"))[-1]
        victim.unlink()
        victim.symlink_to(secret)

    def allowed(spec, data):
        shutil.move(str(data / "points.csv"), data.parent / "points.csv")
        spec["points"]["path"] = str(data.parent / "points.csv")
        spec["allow_outside_root"] = True

    def zero_byte_first(data):
        sorted((data / "arrays").glob("*.npy"))[0].write_bytes(b"")

    def id_traversal(data):
        df = pd.read_csv(data / "points.csv")
        df.loc[len(df) - 1, "id"] = "../../secret"
        df.to_csv(data / "points.csv", index=False)
        np.save(data.parent / "secret.npy", np.ones((3, 4), np.float32))

    def raw_spec(content: bytes):
        def setup(base, folder):
            data = base.copy("custom", folder / "data")
            (data / "spec.yaml").write_bytes(content)
            return ["prepare", "custom", data / "spec.yaml", folder / "s"]
        return setup

    def points_empty(data):
        (data / "points.csv").write_bytes(b"")

    def unknown_kind(spec, data):
        spec["modalities"]["tab"]["kind"] = "colums"

    def noop(spec, data):
        pass

    def text_column(data):
        df = pd.read_csv(data / "points.csv")
        df["t1"] = df["t1"].astype(object)
        df.loc[3, "t1"] = "TOPSECRET"
        df.to_csv(data / "points.csv", index=False)

    cases = [
        Case("points.path: a file outside the spec's folder", "paths", _spec_case(points_outside), 2, ("points.path", "outside"),
             _never_quoted),
        Case("pattern outside the spec's folder", "paths", _spec_case(pattern_outside), 2, ("pattern", "outside")),
        Case("root outside the spec's folder", "paths", _spec_case(root_outside), 2, ("root", "outside")),
        Case("per-point file symlinked outside", "paths", _spec_case(noop, symlink_array), 0, (), _counted("outside_root")),
        Case("an id that climbs out of the folder", "paths", _spec_case(noop, id_traversal), 0, (), _counted("outside_root"), fast=False),
        Case("allow_outside_root: true reads elsewhere", "paths", _spec_case(allowed), 0, fast=False),
        Case("0-byte first .npy", "specs", _spec_case(noop, zero_byte_first), 2, ("cube",)),
        Case("spec is not UTF-8", "specs", raw_spec(b"name: \xff\xfe\n"), 2, ("UTF-8",)),
        Case("YAML tag in a spec", "specs", raw_spec(f"name: !!python/object/apply:os.system ['touch {MARKER}']\n".encode()), 2,
             ("spec.yaml",)),
        Case("spec is a folder", "specs", lambda b, f: ["prepare", "custom", b.custom, f / "s"], 2, ("folder",)),
        Case("unknown modality kind", "specs", _spec_case(unknown_kind), 2, ("kind",)),
        Case("empty points table", "specs", _spec_case(noop, points_empty), 2, ("points.csv",)),
        Case("text in a numeric column is named, not quoted", "specs", _spec_case(noop, text_column), 2, ("t1",), _never_quoted,
             fast=False),
    ]
    return cases


# ---------------------------------------------------------------- recipes and overrides
def _validate(*overrides, recipe: Callable[[Base, Path], Path] | None = None, command: str = "validate"):
    def setup(base, folder):
        path = recipe(base, folder) if recipe else base.recipe
        extra = ["--out", folder / "run"] if command == "train" else []
        return [command, path, *overrides, *extra]
    return setup


def _recipe_file(content: bytes):
    def make(base, folder):
        p = folder / "r.yaml"
        p.write_bytes(content)
        return p
    return make


def _recipe_cases() -> list[Case]:
    def cuda_available():
        return torch.cuda.is_available()

    def no_run_dir(base, folder, result):
        return None if not (folder / "run" / "checkpoints" / "best.pt").exists() else "lost: a run was trained"

    cases = [Case(f"override {o}", "recipes", _validate(o), 2, (o.split("=")[0],)) for o in (
        "train.weight_decay=.inf", "train.warmup_epochs=.inf", "train.lr=.nan", "train.lr=-1", "masking.kappa=1e300",
        "train.grad_clip=.inf", "masking.lam=11", "train.epochs=0", "train.max_memory_gb=.inf", "train.device=bogus",
        "model.d_model=abc", "masking.strategy=bogus")]
    cases += [
        Case("override train.epochs=[1,", "recipes", _validate("train.epochs=[1,"), 2, ("train.epochs",)),
        Case("YAML tag in an override", "recipes", _validate(f"train.seed=!!python/object/apply:os.system ['touch {MARKER}']"), 2,
             ("train.seed",)),
        Case("override without =", "recipes", _validate("train.epochs"), 2, ("KEY=VALUE",)),
        Case("override of a value as a section", "recipes", _validate("train.epochs.x=1"), 2, ("epochs",)),
        Case("YAML tag in a recipe", "recipes", _validate(recipe=_recipe_file(f"store: !!python/object/apply:os.system ['touch {MARKER}']\n".encode())),
             2, ("r.yaml",)),
        Case("recipe not UTF-8", "recipes", _validate(recipe=_recipe_file(b"store: \xff\n")), 2, ("UTF-8",)),
        Case("recipe is a folder", "recipes", _validate(recipe=lambda b, f: f), 2, ("folder",)),
        Case("recipe is a YAML list", "recipes", _validate(recipe=_recipe_file(b"- 1\n- 2\n")), 2, ("mapping",)),
        Case("recipe does not exist", "recipes", _validate(recipe=lambda b, f: f / "none.yaml"), 2, ("none.yaml",)),
        Case("unknown key", "recipes", _validate("train.epoch=3"), 2, ("train.epoch",)),
        Case("train.weight_decay=.inf never trains", "recipes", _validate("train.weight_decay=.inf", command="train"), 2,
             ("weight_decay",), no_run_dir),
        Case("train.device=cuda without CUDA", "recipes", _validate("train.device=cuda", command="train"), 0 if cuda_available() else 2,
             ("cuda",), fast=not cuda_available()),
        Case("train --out is a file", "cli", lambda b, f: (f.joinpath("x").write_text("x"), ["train", b.recipe, "--out", f / "x"])[1], 2,
             ("is a file",)),
        Case("recipe store is a file", "recipes", _validate(f"store={__file__}", command="train"), 2, ("store",)),
        Case("recipe store does not exist", "recipes", _validate("store=/nonexistent/store", command="train"), 2, ("nonexistent",)),
        Case("train --out holds another run", "cli", lambda b, f: ["train", b.recipe, "--out", b.run], 2, ("already holds a run",),
             lambda b, f, r: _run_intact(b)),
    ]
    return cases


def _run_intact(base: Base) -> str | None:
    rows = pd.read_csv(base.run / "metrics.csv")
    return None if len(rows) == RECIPE["train"]["epochs"] else "lost: the existing run's metrics.csv changed"


# ---------------------------------------------------------------- checkpoints and runs
def _run_case(damage: Callable[[Path, Path], None], *command):
    """Copy the run, damage it, run a command on it (`{run}` in `command` is the copy)."""
    def setup(base, folder):
        run = base.copy("run", folder / "run")
        damage(run, folder)
        return [str(run) if c == "{run}" else c for c in command]
    return setup


def _ckpt(edit: Callable[[dict], object]):
    def damage(run, folder):
        p = run / "checkpoints" / "best.pt"
        torch.save(edit(torch.load(p, weights_only=True)), p)
    return damage


def _wrong_shapes(ckpt):
    key = next(k for k, v in ckpt["model"].items() if v.ndim == 2)
    ckpt["model"][key] = torch.zeros(3, 3)
    return ckpt


def _checkpoint_cases() -> list[Case]:
    evaluate = ("eval-subsets", "{run}", "--device", "cpu")

    def zero_byte(run, folder):
        (run / "checkpoints" / "best.pt").write_bytes(b"")

    def truncated(run, folder):
        p = run / "checkpoints" / "best.pt"
        p.write_bytes(p.read_bytes()[:1000])

    def evil(run, folder):
        _malicious_pickle(run / "checkpoints" / "best.pt", folder)

    def tagged_recipe(run, folder):
        (run / "recipe.yaml").write_text(f"store: !!python/object/apply:os.system ['touch {MARKER}']\n")

    def no_recipe(run, folder):
        (run / "recipe.yaml").unlink()

    def garbage_env(run, folder):
        (run / "env.json").write_bytes(b"\x00\xff{")

    def no_best(run, folder):
        (run / "checkpoints" / "best.pt").unlink()

    def model_type(c):
        c["model_config"]["type"] = "resnet"
        return c

    def format_of(v):
        return lambda c: {**c, "format": v}

    nothing = lambda run, folder: None  # noqa: E731
    return [
        Case("0-byte best.pt", "checkpoints", _run_case(zero_byte, *evaluate), 2, ("best.pt",)),
        Case("truncated best.pt", "checkpoints", _run_case(truncated, *evaluate), 2, ("best.pt",)),
        Case("malicious pickle as best.pt", "checkpoints", _run_case(evil, *evaluate), 2, ("best.pt",)),
        Case("checkpoint format -5", "checkpoints", _run_case(_ckpt(format_of(-5)), *evaluate), 2, ("format",)),
        Case("checkpoint format 99", "checkpoints", _run_case(_ckpt(format_of(99)), *evaluate), 2, ("newer",)),
        Case("checkpoint format 'one'", "checkpoints", _run_case(_ckpt(format_of("one")), *evaluate), 2, ("format",), fast=False),
        Case("wrong weight shapes", "checkpoints", _run_case(_ckpt(_wrong_shapes), *evaluate), 2, ("best.pt",)),
        Case("unknown model type", "checkpoints", _run_case(_ckpt(model_type), *evaluate), 2, ("best.pt",)),
        Case("checkpoint holding a list", "checkpoints", _run_case(_ckpt(lambda c: [1, 2]), *evaluate), 2, ("best.pt",)),
        Case("checkpoint without groups", "checkpoints", _run_case(_ckpt(lambda c: {k: v for k, v in c.items() if k != "groups"}), *evaluate),
             2, ("groups",), fast=False),
        Case("YAML tag in a run's recipe.yaml", "checkpoints", _run_case(tagged_recipe, *evaluate), 2, ("recipe.yaml",)),
        Case("run without recipe.yaml", "checkpoints", _run_case(no_recipe, *evaluate), 2, ("recipe.yaml",)),
        Case("garbage env.json is not needed", "checkpoints", _run_case(garbage_env, *evaluate), 0, fast=False),
        Case("run without best.pt", "checkpoints", _run_case(no_best, *evaluate), 2, ("best.pt",)),
        Case("attribute --modality nope", "cli", _run_case(nothing, "attribute", "{run}", "--modality", "nope", "--device", "cpu"), 2,
             ("nope",)),
        Case("attribute --context bogus", "cli", _run_case(nothing, "attribute", "{run}", "--context", "bogus", "--device", "cpu"), 2,
             ("--context",)),
        Case("attribute --by bogus", "cli", _run_case(nothing, "attribute", "{run}", "--modality", "sentinel2", "--by", "bogus",
                                                      "--device", "cpu"), 2, ("--by",), fast=False),
        Case("attribute --target bogus", "cli", _run_case(nothing, "attribute", "{run}", "--target", "bogus", "--device", "cpu"), 2,
             ("bogus",), fast=False),
        Case("attribute --sampler bogus", "cli", _run_case(nothing, "attribute", "{run}", "--sampler", "bogus", "--device", "cpu"), 2,
             ("--sampler",)),
        Case("eval-subsets --device bogus", "cli", _run_case(nothing, "eval-subsets", "{run}", "--device", "bogus"), 2, ("bogus",)),
        Case("eval-subsets --split bogus", "cli", _run_case(nothing, "eval-subsets", "{run}", "--split", "bogus", "--device", "cpu"), 2,
             ("bogus",)),
        Case("eval-subsets --checkpoint bogus", "cli", _run_case(nothing, "eval-subsets", "{run}", "--checkpoint", "bogus",
                                                                 "--device", "cpu"), 2, ("bogus",), fast=False),
        Case("eval-subsets --subsets 'sentinel2[band='", "cli", _run_case(nothing, "eval-subsets", "{run}", "--subsets", "sentinel2[band=",
                                                                           "--device", "cpu"), 2, ("sentinel2",)),
        Case("eval-subsets --shard x", "cli", _run_case(nothing, "eval-subsets", "{run}", "--shard", "x", "--device", "cpu"), 2,
             ("--shard",), fast=False),
        Case("eval-subsets on a folder that is no run", "cli", lambda b, f: ["eval-subsets", f, "--device", "cpu"], 2, ("recipe.yaml",)),
        Case("compare a run without eval", "cli", _run_case(nothing, "compare", "{run}", "--out", "cmp"), 2, ("eval-subsets",)),
        Case("compare --out is a file", "cli", lambda b, f: (f.joinpath("x").write_text("x"), ["compare", _evaluated(b, f), "--out", f / "x"])[1],
             2, ("is a file",)),
        Case("demo --out is a file", "cli", lambda b, f: (f.joinpath("x").write_text("x"), ["demo", "--out", f / "x"])[1], 2, ("is a file",)),
        Case("non-finite loss stops training, exit 1", "training", lambda b, f: ["train", b.recipe, "--out", f / "run"], 1,
             ("not finite", "nan"), _no_nan_checkpoint, patch=_nan_loss_after(3)),
    ]


def _evaluated(base: Base, folder: Path) -> Path:
    run = base.copy("run", folder / "run")
    from miam_cli.evaluate.subsets import run_eval_subsets

    run_eval_subsets(run, device="cpu")
    return run


@contextlib.contextmanager
def _patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _nan_loss_after(steps: int):
    """The loss of step `steps` onward is NaN (what a diverging run produces)."""
    def patch(folder):
        from miam_cli.engine import train as T

        original, count = T.make_loss, [0]

        def make_loss(task, weights=None):
            loss = original(task, weights)

            class NanAfter(torch.nn.Module):
                def forward(self, logits, target):
                    count[0] += 1
                    value = loss(logits, target)
                    return value * float("nan") if count[0] >= steps else value
            return NanAfter()
        return _patched(T, "make_loss", make_loss)
    return patch


def _no_nan_checkpoint(base, folder, result):
    for name in ("best.pt", "last.pt"):
        p = folder / "run" / "checkpoints" / name
        if p.exists():
            weights = torch.load(p, weights_only=True)["model"]
            if not all(torch.isfinite(v).all() for v in weights.values()):
                return f"lost: {name} holds non-finite weights"
    return None


# ---------------------------------------------------------------- stores
def _store_case(damage: Callable[[Path], None], *command, legacy: bool = False):
    def setup(base, folder):
        store = base.copy("store", folder / "s")
        if legacy:
            make_version_1(store)
        damage(store)
        if command and command[0] == "train":
            return ["train", base.recipe, f"store={store}", "--out", folder / "run", *command[1:]]
        return [*command[:2], store, *command[2:]]
    return setup


def _chunk(store: Path, modality="sentinel2", array="values", index=1) -> Path:
    return store / "tokens.zarr" / modality / array / "c" / str(index) / "0" / ("0" if array == "values" else "")


def _store_json(edit):
    def damage(store):
        meta = json.loads((store / "store.json").read_text())
        edit(meta)
        (store / "store.json").write_text(json.dumps(meta))
    return damage


def _samples(edit):
    def damage(store):
        df = pd.read_parquet(store / "samples.parquet")
        edit(df).to_parquet(store / "samples.parquet", index=False)
    return damage


def make_version_1(store: Path) -> None:
    """Rewrite a store as miam wrote it before checksums: no crc32c codec, empty chunks not written,
    no digests, `version: 1` (a store a user may still have on disk)."""
    import zarr

    root = zarr.open_group(store / "tokens.zarr", mode="r")
    arrays = {f"{m}/{k}": (np.asarray(root[f"{m}/{k}"][:]), root[f"{m}/{k}"].chunks) for m in root.group_keys() for k in ("values", "valid")}
    shutil.rmtree(store / "tokens.zarr")
    new = zarr.open_group(store / "tokens.zarr", mode="w")
    for name, (data, chunks) in arrays.items():
        a = new.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype, fill_value=0)
        a[:] = data
    meta = json.loads((store / "store.json").read_text())
    meta["version"] = 1
    meta.pop("files", None)
    (store / "store.json").write_text(json.dumps(meta))


def _store_cases() -> list[Case]:
    info, verify = ("store", "info"), ("store", "verify")

    def rm_chunk(store):
        _chunk(store).unlink()

    def rm_valid_chunk(store):
        _chunk(store, array="valid").unlink()

    def rm_zarr(store):
        shutil.rmtree(store / "tokens.zarr")

    def truncate_chunk(store):
        p = _chunk(store)
        p.write_bytes(p.read_bytes()[:50])

    def flip(store):
        flip_bits(store, random.Random(7), 1)

    def rm_array_meta(store):
        (store / "tokens.zarr" / "landsat" / "valid" / "zarr.json").unlink()

    def rm_classes(store):
        (store / "classes.parquet").unlink()

    def garbage_parquet(store):
        p = store / "samples.parquet"
        p.write_bytes(p.read_bytes()[:200])

    def version(v):
        return _store_json(lambda m: m.update(version=v))

    nothing = lambda store: None  # noqa: E731
    cases = []
    for what, damage in (("a missing values chunk", rm_chunk), ("a truncated chunk", truncate_chunk), ("one flipped bit", flip)):
        for command in (verify, ("train",)):
            cases.append(Case(f"{what}: {' '.join(command)}", "stores", _store_case(damage, *command), 2, ("tokens.zarr",),
                              fast=command == verify or what == "a missing values chunk"))
    cases += [
        Case("a missing values chunk: store info", "stores", _store_case(rm_chunk, *info), 2, ("c/1/0/0",)),
        Case("a missing valid chunk: store info", "stores", _store_case(rm_valid_chunk, *info), 2, ("valid",)),
        Case("tokens.zarr deleted: store info", "stores", _store_case(rm_zarr, *info), 2, ("tokens.zarr",)),
        Case("tokens.zarr deleted: train", "stores", _store_case(rm_zarr, "train"), 2, ("tokens.zarr",), fast=False),
        Case("an array's zarr.json deleted", "stores", _store_case(rm_array_meta, *verify), 2, ("landsat",)),
        Case("store.json version 99", "stores", _store_case(version(99), *info), 2, ("version 99",)),
        Case("store.json version -1", "stores", _store_case(version(-1), *info), 2, ("version -1",), fast=False),
        Case("store.json version 'x'", "stores", _store_case(version("x"), *info), 2, ("store.json",), fast=False),
        Case("store.json is garbage", "stores", _store_case(lambda s: (s / "store.json").write_bytes(b"\x00{"), *info), 2, ("store.json",)),
        Case("store.json deleted", "stores", _store_case(lambda s: (s / "store.json").unlink(), *info), 2, ("store.json",)),
        Case("samples.parquet with fewer rows", "stores", _store_case(_samples(lambda df: df.iloc[:-5]), "train"), 2, ("samples.parquet",)),
        Case("samples.parquet with a class out of range", "stores",
             _store_case(_samples(lambda df: df.assign(labels=[np.array([99], np.int32)] * len(df))), *info), 2, ("class index",)),
        Case("samples.parquet truncated", "stores", _store_case(garbage_parquet, *info), 2, ("samples.parquet",)),
        Case("classes.parquet deleted", "stores", _store_case(rm_classes, *verify), 2, ("classes.parquet",)),
        Case("samples.parquet edited (digest)", "stores", _store_case(_samples(lambda df: df.assign(lon=df["lon"] + 1e-9)), *verify), 2,
             ("samples.parquet",)),
        Case("store info on a file", "stores", lambda b, f: (f.joinpath("x").write_text("x"), ["store", "info", f / "x"])[1], 2, ("x",)),
        Case("a version-1 store still reads", "stores", _store_case(nothing, *verify, legacy=True), 0, ("version-1",)),
        Case("a version-1 store still trains", "stores", _store_case(nothing, "train", legacy=True), 0, fast=False),
        Case("a healthy store verifies", "stores", _store_case(nothing, *verify), 0, ("ok",)),
    ]
    return cases


def flip_bits(store: Path, rng: random.Random, n: int) -> list[str]:
    """Flip one random bit in each of `n` random chunk files; returns their paths."""
    chunks = sorted(p for p in (store / "tokens.zarr").rglob("*") if p.is_file() and "/c/" in p.as_posix())
    hit = []
    for p in rng.sample(chunks, n):
        data = bytearray(p.read_bytes())
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
        p.write_bytes(bytes(data))
        hit.append(str(p))
    return hit


# ---------------------------------------------------------------- CLI misuse
def _cli_cases() -> list[Case]:
    simple = lambda *argv: (lambda b, f: list(argv))  # noqa: E731
    return [
        Case("no arguments", "cli", simple(), 2, ("Usage",)),
        Case("unknown command", "cli", simple("trian"), 2, ("trian",)),
        Case("unknown option", "cli", simple("store", "info", "--bogus"), 2, ("--bogus",)),
        Case("missing argument", "cli", simple("train"), 2, ("Missing argument",)),
        Case("store info on nothing", "cli", simple("store", "info", "/nonexistent"), 2, ("/nonexistent",)),
        Case("compare without runs", "cli", simple("compare"), 2, ("Missing argument",)),
        Case("--budget 0", "cli", lambda b, f: ["attribute", b.run, "--budget", "0"], 2, ("--budget",)),
    ]


# ---------------------------------------------------------------- predict, map, synth points, prepare --like
# A second, location-computable baseline (`miam synth points`: rasters, a ready dataset and map spec),
# built on first use so that only the cases that need it pay for it.
POINTS_RECIPE = {"model": {"d_model": 8, "depth": 1, "heads": 2}, "masking": {"strategy": "miam"},
                 "train": {"epochs": 1, "batch_size": 32, "seed": 0, "device": "cpu"}}
MAP_GRID = {"bbox": [400000.0, 4710000.0, 640000.0, 4950000.0], "resolution": 16000.0, "crs": "EPSG:32631"}  # 15 x 15 px


@dataclass
class Points:
    data: Path  # spec.yaml, points.csv, rasters/ (from `miam synth points`)
    store: Path
    run: Path


def points_base(base: Base) -> Points:
    folder = base.root / "points"
    p = Points(folder / "data", folder / "store", folder / "run")
    if (p.run / "checkpoints" / "best.pt").exists():
        return p
    folder.mkdir(exist_ok=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"store": str(p.store), **POINTS_RECIPE}))
    for argv in (["synth", "points", p.data, "--points", 120, "--seed", 0],
                 ["prepare", "custom", p.data / "spec.yaml", p.store],
                 ["train", folder / "recipe.yaml", "--out", p.run]):
        result = run_cli(argv, folder)
        if result.code != 0:
            raise RuntimeError(f"points baseline step {argv[:2]} failed: {result.err[-1000:]}")
    return p


def _map_case(edit: Callable[[dict, Path], None] | None = None, *extra, run: str = "points", out: str = "m.tif", raw: bytes | None = None):
    """Copy the points data, write a map spec beside its dataset spec (15 x 15 px), `edit` it, map it."""
    def setup(base, folder):
        pts = points_base(base)
        data = shutil.copytree(pts.data, folder / "data", symlinks=True)
        spec = {"dataset": "spec.yaml", "grid": dict(MAP_GRID)}
        if edit:
            edit(spec, data)
        path = data / "map.yaml"
        if raw is not None:
            path.write_bytes(raw)
        else:
            path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return ["map", pts.run if run == "points" else base.run, path, "--out", folder / out, "--device", "cpu", *extra]
    return setup


def _no_map(base, folder, result):
    return "lost: a map was written for refused input" if (folder / "m.tif").exists() else None


def _edit_dataset(edit: Callable[[dict], None]):
    def change(spec, data):
        dataset = yaml.safe_load((data / "spec.yaml").read_text())
        edit(dataset)
        (data / "spec.yaml").write_text(yaml.safe_dump(dataset, sort_keys=False))
    return change


def _map_cases() -> list[Case]:
    def grid(**kw):
        return lambda spec, data: spec["grid"].update(kw)

    def template_out(spec, data):
        outside = data.parent / "elevation.tif"
        shutil.copy(data / "rasters" / "elevation.tif", outside)
        (data / "template.tif").symlink_to(outside)
        spec["grid"] = {"template": "template.tif"}

    def raster_out(spec, data):
        outside = data.parent / "soil_ph.tif"
        shutil.move(data / "rasters" / "soil_ph.tif", outside)
        (data / "rasters" / "soil_ph.tif").symlink_to(outside)

    def dataset_out(spec, data):
        shutil.move(data / "spec.yaml", data.parent / "spec.yaml")
        spec["dataset"] = str(data.parent / "spec.yaml")

    def zero_byte_raster(spec, data):
        (data / "rasters" / "soil_ph.tif").write_bytes(b"")

    def existing_out(base, folder):
        argv = _map_case()(base, folder)
        (folder / "m.tif").write_text("my own file")
        return argv

    def kept(base, folder, result):
        return None if (folder / "m.tif").read_text() == "my own file" else "lost: an existing file was overwritten"

    def out_folder(base, folder):
        argv = _map_case()(base, folder)
        (folder / "m.tif").mkdir()
        return argv

    def out_under_file(base, folder):
        (folder / "f").write_text("x")
        return _map_case(None, out="f/m.tif")(base, folder)

    tagged = f"grid: !!python/object/apply:os.system ['touch {MARKER}']\n".encode()
    cases = [
        Case("map spec is not YAML", "maps", _map_case(raw=b"grid: [1,\n"), 2, ("map.yaml",), _no_map),
        Case("map spec is not UTF-8", "maps", _map_case(raw=b"grid: \xff\xfe\n"), 2, ("UTF-8",), _no_map, fast=False),
        Case("YAML tag in a map spec", "maps", _map_case(raw=tagged), 2, ("map.yaml",), _no_map),
        Case("map spec is a YAML list", "maps", _map_case(raw=b"- 1\n- 2\n"), 2, ("map.yaml",), _no_map, fast=False),
        Case("unknown key in a map spec", "maps", _map_case(lambda s, d: s.update(gird=1)), 2, ("gird",), _no_map, fast=False),
        Case("map grid with both template and bbox", "maps", _map_case(grid(template="rasters/elevation.tif")), 2, ("template",),
             _no_map, fast=False),
        Case("map grid outside every raster", "maps", _map_case(grid(bbox=[0.0, 0.0, 100000.0, 100000.0])), 2, ("no pixel",), _no_map),
        Case("map grid of 10^12 pixels", "maps", _map_case(grid(resolution=0.2)), 2, ("grid",), _no_map, fast=False),
        Case("map resolution .nan", "maps", _map_case(grid(resolution=float("nan"))), 2, ("resolution",), _no_map, fast=False),
        Case("map --species nope", "maps", _map_case(None, "--species", "nope"), 2, ("nope",), _no_map),
        Case("map spec does not reproduce the run (patch size)", "maps",
             _map_case(_edit_dataset(lambda d: d["modalities"]["terrain"].update(size=16))), 2, ("terrain",), _no_map),
        Case("map spec without a modality the run reads", "maps",
             _map_case(_edit_dataset(lambda d: d["modalities"].pop("terrain"))), 0, ("terrain",), fast=False),
        Case("map of a run whose store has no dataset spec", "maps", _map_case(lambda s, d: s.pop("dataset"), run="base"), 2,
             ("dataset spec",), _no_map),
        Case("map dataset: a spec that does not exist", "maps", _map_case(lambda s, d: s.update(dataset="nope.yaml")), 2,
             ("nope.yaml",), _no_map, fast=False),
        Case("map --out is an existing file", "maps", existing_out, 2, ("--overwrite",), kept),
        Case("map --out is a folder", "maps", out_folder, 2, ("m.tif",)),
        Case("map --out under a file", "maps", out_under_file, 2, ("is a file",), fast=False),
        Case("map --shard 3/2", "maps", _map_case(None, "--shard", "3/2"), 2, ("--shard",), _no_map, fast=False),
        Case("map --merge before any tile", "maps", _map_case(None, "--merge"), 2, ("tile",), _no_map, fast=False),
        Case("map raster is a 0-byte file", "maps", _map_case(zero_byte_raster), 2, ("soil_ph.tif",), _no_map, fast=False),
        Case("map grid.template symlinked outside the spec's folder", "paths", _map_case(template_out), 2, ("grid.template", "outside"),
             _no_map),
        Case("map raster symlinked outside the dataset's folder", "paths", _map_case(raster_out), 2, ("soil_ph.tif", "outside"),
             _no_map, fast=False),
        Case("map dataset: outside the map spec's folder", "paths",
             _map_case(dataset_out), 2, ("dataset", "outside"), _no_map, fast=False),
    ]
    # a crash (an exception nothing catches) before the k-th rename of a map in 4 px tiles (plan.json, 16
    # tiles, the GeoTIFF), then the same command: the map must equal an uninterrupted one
    for k in (1, 2, 9, 18):
        cases.append(Case(f"crash before rename {k} of a map, then again", "maps", _map_case(None, "--tile", "4"), None, (),
                          _map_resumes, patch=_crash_at_rename(k), fast=k == 9))
    return cases


def _map_reference(base: Base) -> Path:
    ref = base.root / "points" / "map-tile4.tif"
    if not ref.exists():
        folder = base.root / "points" / "map-ref"
        argv = _map_case(None, "--tile", "4")(base, folder)
        result = run_cli(argv, folder)
        if result.code != 0:
            raise RuntimeError(f"reference map failed: {result.err[-500:]}")
        shutil.move(folder / "m.tif", ref)
    return ref


def _same_map(ref: Path, path: Path) -> str | None:
    import rasterio

    if not path.exists():
        return "lost: no map after the rerun"
    with rasterio.open(ref) as a, rasterio.open(path) as b:
        same = np.array_equal(a.read(), b.read(), equal_nan=True) and a.descriptions == b.descriptions
    return None if same else "lost: the resumed map differs from an uninterrupted one"


def _map_resumes(base, folder, result):
    if (folder / "m.tif").exists() and result.code != 0:
        return "lost: a map file exists after a failed run"
    again = run_cli(["map", points_base(base).run, folder / "data" / "map.yaml", "--out", folder / "m.tif", "--device", "cpu",
                     "--tile", "4"], folder)
    if again.code != 0:
        return f"lost: the map cannot be finished by running it again (exit {again.code}: {again.err.strip()[-200:]})"
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".parts")]
    return _same_map(_map_reference(base), folder / "m.tif") or (f"lost: left behind: {leftovers}" if leftovers else None)


def _predict_cases() -> list[Case]:
    def predict(*extra, run: str = "base"):
        def setup(base, folder):
            r = base.run if run == "base" else points_base(base).run
            return ["predict", r, *extra, "--device", "cpu"]
        return setup

    def test(*extra, **kw):
        return predict("--split", "test", *extra, **kw)

    def out_under_file(base, folder):
        (folder / "f").write_text("x")
        return predict("--split", "test", "--out", folder / "f" / "p.parquet")(base, folder)

    def out_folder(base, folder):
        (folder / "p.parquet").mkdir()
        return predict("--split", "test", "--out", folder / "p.parquet")(base, folder)

    def damaged_store(damage):
        def setup(base, folder):
            store = base.copy("store", folder / "s")
            damage(store)
            return ["predict", base.run, store, "--split", "test", "--device", "cpu", "--out", folder / "p.parquet"]
        return setup

    def foreign_store(base, folder):
        return ["predict", base.run, points_base(base).store, "--split", "test", "--device", "cpu", "--out", folder / "p.parquet"]

    def no_output(base, folder, result):
        return "lost: a prediction file was written for refused input" if (folder / "p.parquet").exists() else None

    return [
        Case("predict on a store without a predict split", "predict", predict(), 2, ("predict",)),
        Case("predict --split bogus", "predict", predict("--split", "bogus"), 2, ("bogus",)),
        Case("predict --format bogus", "predict", test("--format", "bogus"), 2, ("--format",), fast=False),
        Case("predict --species nope", "predict", test("--species", "nope"), 2, ("nope",)),
        Case("predict --subsets nope", "predict", test("--subsets", "nope"), 2, ("nope",), fast=False),
        Case("predict --shard 3/2", "predict", test("--shard", "3/2"), 2, ("--shard",), fast=False),
        Case("predict --merge without shards", "predict", test("--merge"), 2, ("shard",), fast=False),
        Case("predict --threshold 2", "predict", test("--threshold", "2"), 2, ("--threshold",), fast=False),
        Case("predict --out under a file", "predict", out_under_file, 2, ("is a file",)),
        Case("predict --out is a folder", "predict", out_folder, 2, ("p.parquet",), fast=False),
        Case("predict STORE that is no store", "predict", lambda b, f: ["predict", b.run, f, "--device", "cpu"], 2, ("store.json",)),
        Case("predict on a store of other modalities", "predict", foreign_store, 2, ("modalit",), no_output),
        Case("predict on a store with a missing chunk", "predict", damaged_store(lambda s: _chunk(s).unlink()), 2, ("tokens.zarr",),
             no_output),
        Case("predict on a store with store.json version 99", "predict", damaged_store(_store_json(lambda m: m.update(version=99))), 2,
             ("version 99",), no_output, fast=False),
    ]


def _synth_cases() -> list[Case]:
    def into_file(base, folder):
        (folder / "x").write_text("x")
        return ["synth", "points", folder / "x", "--points", "60"]

    def over_user_files(base, folder):
        (folder / "d").mkdir()
        (folder / "d" / "spec.yaml").write_text("my own spec\n")
        return ["synth", "points", folder / "d", "--points", "60"]

    def user_file_kept(base, folder, result):
        return None if (folder / "d" / "spec.yaml").read_text() == "my own spec\n" else "lost: synth points overwrote a user's file"

    return [
        Case("synth points into a file", "synth", into_file, 2, ("not a folder",)),
        Case("synth points --points 10", "synth", lambda b, f: ["synth", "points", f / "d", "--points", "10"], 2, ("--points",)),
        Case("synth points over a folder holding other files", "synth", over_user_files, 2, ("not empty",), user_file_kept),
    ]


def _like_cases() -> list[Case]:
    def like(store: Callable[[Base, Path], Path], edit: Callable[[dict], None] | None = None):
        """`prepare custom` of the points dataset (edited) with --like STORE."""
        def setup(base, folder):
            data = shutil.copytree(points_base(base).data, folder / "data", symlinks=True)
            if edit:
                _edit_dataset(edit)({}, data)
            return ["prepare", "custom", data / "spec.yaml", folder / "s", "--like", store(base, folder)]
        return setup

    def points_store(base, folder):
        return points_base(base).store

    def damaged(damage):
        def make(base, folder):
            store = shutil.copytree(points_base(base).store, folder / "like")
            damage(store)
            return store
        return make

    def no_store(base, folder, result):
        return "lost: a store was written against a refused --like" if (folder / "s" / "store.json").exists() else None

    def same_as_points(base, folder, result):
        from miam_cli.store.reader import TokenStore

        a, b = TokenStore(points_base(base).store), TokenStore(folder / "s")
        same = all(a.meta.modalities[m].normalization == b.meta.modalities[m].normalization for m in a.modalities)
        return None if same else "silent: --like did not take the like store's normalisation"

    return [
        Case("--like a folder that is no store", "like", like(lambda b, f: f), 2, ("store.json",), no_store),
        Case("--like a file", "like", like(lambda b, f: (f / "x").write_text("x") and f / "x"), 2, ("x",), no_store, fast=False),
        Case("--like a store whose store.json is garbage", "like", like(damaged(lambda s: (s / "store.json").write_bytes(b"\x00{"))), 2,
             ("store.json",), no_store),
        Case("--like a store without tokens.zarr", "like", like(damaged(lambda s: shutil.rmtree(s / "tokens.zarr"))), 2,
             ("tokens.zarr",), no_store, fast=False),
        Case("--like a store of other modalities", "like", like(lambda b, f: b.store), 2, ("modalit",), no_store),
        Case("--like: a patch size differs", "like", like(points_store, lambda d: d["modalities"]["terrain"].update(size=16)), 2,
             ("terrain",), no_store),
        Case("--like: a patch grid differs", "like", like(points_store, lambda d: d["modalities"]["terrain"].update(grid=4)), 2,
             ("terrain",), no_store, fast=False),
        Case("--like: a modality missing", "like", like(points_store, lambda d: d["modalities"].pop("soil")), 2, ("soil",), no_store,
             fast=False),
        Case("--like: a raster variable more", "like",
             like(points_store, lambda d: d["modalities"]["climate"]["files"].update(soil="rasters/soil_ph.tif")), 2, ("climate",),
             no_store, fast=False),
        Case("--like the store it was prepared into", "like", like(points_store), 0, (), same_as_points, fast=False),
        Case("prepare geoplant --like a custom store", "like",
             lambda b, f: ["prepare", "geoplant", b.raw, f / "s", "--chunk-size", "16", "--like", points_base(b).store], 2, ("modalit",),
             no_store, fast=False),
    ]


# ---------------------------------------------------------------- a full disk and commits (in-process)
class DiskFull:
    """`os.write`-level ENOSPC on files whose name matches, from the `after`-th matching write on,
    until `free()` (the user frees space)."""

    def __init__(self, match: str, after: int = 1):
        self.match, self.after, self.seen, self.full = match, after, 0, True

    @contextlib.contextmanager
    def __call__(self, folder: Path):
        from miam_cli.store import atomic

        original = atomic.atomic_write

        def atomic_write(path, write):
            def guarded(tmp):
                if self.full and self.match in Path(path).name:
                    self.seen += 1
                    if self.seen >= self.after:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
                write(tmp)
            return original(path, guarded)

        with contextlib.ExitStack() as stack:
            for module in _atomic_users():
                stack.enter_context(_patched(module, "atomic_write", atomic_write))
            yield


def _atomic_users():
    import importlib

    names = ("miam_cli.store.atomic", "miam_cli.runs.checkpoint", "miam_cli.store.writer", "miam_cli.evaluate.subsets")
    return [importlib.import_module(n) for n in names]


def _resumes_to_reference(what: str):
    """Check after a failed run: a second run of the same command (space freed) ends like the baseline."""
    def check(base, folder, result):
        if what == "train":
            again = run_cli(["train", base.recipe, "--out", folder / "run", "--resume"], folder)
            if again.code != 0:
                return f"lost: the run cannot be resumed after the failure (exit {again.code}: {again.err.strip()[-200:]})"
            return same_run(base.run, folder / "run")
        again = run_cli(["prepare", "geoplant", base.raw, folder / "s", "--chunk-size", "16"], folder)
        if again.code != 0:
            return f"lost: the prepare cannot be resumed (exit {again.code}: {again.err.strip()[-200:]})"
        return same_store(base.store, folder / "s")
    return check


def same_run(ref: Path, run: Path) -> str | None:
    """None when `run` ends exactly as `ref`: last.pt and best.pt weights, metrics.csv rows."""
    for name in ("last.pt", "best.pt"):
        a = torch.load(ref / "checkpoints" / name, weights_only=True)
        p = run / "checkpoints" / name
        if not p.exists():
            return f"lost: no {name}"
        b = torch.load(p, weights_only=True)
        if a["progress"]["epoch"] != b["progress"]["epoch"] or any(not torch.equal(a["model"][k], b["model"][k]) for k in a["model"]):
            return f"lost: {name} differs from an uninterrupted run (epoch {b['progress']['epoch']} vs {a['progress']['epoch']})"
    cols = ["epoch", "train_loss", "val_auc"]
    ma, mb = pd.read_csv(ref / "metrics.csv")[cols], pd.read_csv(run / "metrics.csv")[cols] if (run / "metrics.csv").exists() else None
    if mb is None or not ma.equals(mb):
        return f"lost: metrics.csv differs from an uninterrupted run ({None if mb is None else len(mb)} rows)"
    leftovers = [p.name for p in [*run.iterdir(), *(run / "checkpoints").iterdir()] if p.name.startswith(".")]
    return f"lost: temporary files left: {leftovers}" if leftovers else None


def same_store(ref: Path, store: Path) -> str | None:
    from miam_cli.store.verify import verify_store
    from miam_cli.store.reader import TokenStore

    report = verify_store(store)
    if not report.ok:
        return f"lost: the resumed store is damaged: {report.problems[0]}"
    a, b = TokenStore(ref), TokenStore(store)
    if not a.samples.equals(b.samples):
        return "lost: samples.parquet differs"
    for m in a.modalities:
        idx = np.arange(a.meta.num_samples)
        if not all(np.array_equal(x, y) for x, y in zip(a.read(m, idx, False), b.read(m, idx, False))):
            return f"lost: {m} tokens differ"
    return None


def _crash_at_rename(k: int):
    """An in-process crash (an exception no handler catches) just before the k-th rename of a run."""
    class Crash(BaseException):
        pass

    @contextlib.contextmanager
    def patch(folder):
        original, count = os.replace, [0]

        def replace(src, dst, *a, **kw):
            count[0] += 1
            if count[0] == k:
                raise Crash(f"crash before rename {k} ({Path(dst).name})")
            return original(src, dst, *a, **kw)
        with _patched(os, "replace", replace):
            try:
                yield
            except Crash:
                pass
    return patch


def _commit_cases() -> list[Case]:
    train = lambda b, f: ["train", b.recipe, "--out", f / "run"]  # noqa: E731
    cases = [
        Case("disk full writing last.pt", "disk", train, 1, ("last.pt", "No space left"), _resumes_to_reference("train"),
             patch=DiskFull("last.pt", after=2)),
        Case("disk full writing the first best.pt", "disk", train, 1, ("best", "No space left"), _resumes_to_reference("train"),
             patch=DiskFull("best", after=1), fast=False),
        Case("disk full writing metrics.csv", "disk", train, 1, ("metrics.csv", "No space left"), _resumes_to_reference("train"),
             patch=DiskFull("metrics.csv", after=1), fast=False),
        Case("disk full writing a store chunk marker", "disk", lambda b, f: ["prepare", "geoplant", b.raw, f / "s", "--chunk-size", "16"],
             1, ("No space left",), _resumes_to_reference("prepare"), patch=DiskFull("chunk-000001", after=1)),
    ]
    # a crash before each rename of a 2-epoch training (recipe, env, then per epoch: pending best, last.pt,
    # best.pt, metrics.csv, imbalance.csv; 12 renames): resume must end exactly as an uninterrupted run
    for k in range(1, 13):
        cases.append(Case(f"crash before rename {k} of training, then --resume", "commit", train, None, (),
                          _resumes_to_reference("train"), patch=_crash_at_rename(k), fast=k in (5, 6, 11, 12)))
    return cases


def all_cases() -> list[Case]:
    return (_raw_cases() + _spec_cases() + _recipe_cases() + _checkpoint_cases() + _store_cases() + _cli_cases() + _commit_cases()
            + _predict_cases() + _map_cases() + _synth_cases() + _like_cases())


# ---------------------------------------------------------------- real processes: kill -9, SIGTERM, workers, a real full disk
def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# `miam ARGV` in a child process that SIGKILLs itself just before its K-th rename (os.replace), as a
# power cut or the OOM killer would stop it: no handler, no cleanup, temporary files left behind.
KILL_AT_RENAME = """
import os, signal, sys
k, count, original = int(sys.argv[1]), [0], os.replace
def replace(src, dst, *a, **kw):
    count[0] += 1
    if count[0] == k:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(src, dst, *a, **kw)
os.replace = replace
from miam_cli.cli.main import main
main(sys.argv[2:])
"""


def _subprocess(code_or_argv: list, folder: Path, timeout: float = 900) -> Result:
    import subprocess
    import sys

    start = time.monotonic()
    proc = subprocess.run([sys.executable, *map(str, code_or_argv)], cwd=folder, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr, None, time.monotonic() - start)


def killed_at_rename(k: int):
    def runner(argv, folder):
        return _subprocess(["-c", KILL_AT_RENAME, k, *argv], folder)
    return runner


def _resumed_subprocess(what: str):
    """Check after a killed process: the same command run again (a process, as a user would) finishes
    the job, and the result equals the baseline."""
    def check(base, folder, result):
        if what == "train":
            again = _subprocess(["-m", "miam_cli", "train", base.recipe, "--out", folder / "run", "--resume"], folder)
            if again.code != 0:
                return f"lost: --resume fails after the kill (exit {again.code}: {again.err.strip()[-300:]})"
            return same_run(base.run, folder / "run")
        again = _subprocess(["-m", "miam_cli", "prepare", "geoplant", base.raw, folder / "s", "--chunk-size", "16"], folder)
        if again.code != 0:
            return f"lost: the prepare cannot be resumed after the kill (exit {again.code}: {again.err.strip()[-300:]})"
        return same_store(base.store, folder / "s")
    return check


def _sigterm_during_startup(argv, folder):
    """Send SIGTERM once the run dir exists (the store is being read, the model built): exit 75 expected."""
    import signal
    import subprocess
    import sys

    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "miam_cli", *map(str, argv)], cwd=folder, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = Path(argv[argv.index("--out") + 1])
    while not run.exists() and proc.poll() is None and time.monotonic() - start < 600:
        time.sleep(0.01)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=900)
    return Result(proc.returncode, out, err, None, time.monotonic() - start)


def _children(pid: int) -> list[int]:
    kids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            kids.append(int(status.parent.name))
    return kids


def _workers_die_with_parent(argv, folder):
    """`prepare --workers 2`, SIGKILL the parent once its workers run: the workers must go too."""
    import signal
    import subprocess
    import sys

    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "miam_cli", *map(str, argv)], cwd=folder, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    while proc.poll() is None and time.monotonic() - start < 600:
        workers = [k for k in _children(proc.pid) if "spawn_main" in _cmdline(k)]
        if len(workers) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [w for w in workers if _alive(w)]
    for w in left:  # never leave them running, whatever the verdict
        os.kill(w, signal.SIGKILL)
    err = f"workers seen: {len(workers)}; still running 10 s after the parent was killed: {len(left)}"
    return Result(1 if left or len(workers) < 2 else 0, "", err, None, time.monotonic() - start)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state


def _concurrent_prepares(argv, folder):
    """Two identical prepares into one store at once: one finishes it, the other is refused or finds it done."""
    import subprocess
    import sys

    start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "miam_cli", *map(str, argv)], cwd=folder, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    codes = sorted(p.returncode for p in procs)
    err = " | ".join(o[1].strip().splitlines()[-1] if o[1].strip() else "" for o in outs)
    return Result(0 if codes[0] == 0 and codes[1] in (0, 2) else codes[-1], "", err, None, time.monotonic() - start)


def _store_whole(base, folder, result):
    store = folder / "s"
    if (store / "_progress").exists():
        return "lost: _progress left behind in a complete store"
    return same_store(base.store, store)


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of `size` mounted at `path` (root only); raises OSError when mounting is not allowed."""
    import subprocess

    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _full_disk_training(argv, folder):
    """Training into a small tmpfs whose free space holds the first epoch's checkpoints but not the
    second's: exit 1 naming the file; once the filler is deleted, --resume must end exactly as an
    uninterrupted run. Problems found after the failure are reported as `lost:` lines."""
    recipe, ref = Path(argv[0]), Path(argv[1])
    size = (ref / "checkpoints" / "last.pt").stat().st_size
    with contextlib.ExitStack() as stack:
        try:
            mount = stack.enter_context(tmpfs(folder / "disk", "16m"))
        except OSError as e:
            return Result(None, "", f"skipped: {e}")
        filler, run = mount / "filler", mount / "run"
        free = shutil.disk_usage(mount).free
        filler.write_bytes(b"\0" * max(0, free - int(2.5 * size) - 64 * 1024))
        first = _subprocess(["-m", "miam_cli", "train", recipe, "--out", run], folder)
        if first.code == 0:
            return first
        filler.unlink()
        again = _subprocess(["-m", "miam_cli", "train", recipe, "--out", run, "--resume"], folder)
        problem = same_run(ref, run) if again.code == 0 else f"lost: --resume failed after space was freed: {again.err.strip()[-300:]}"
        return Result(first.code, first.out, first.err + (f"\n{problem}" if problem else ""), None, first.seconds + again.seconds)


def _lost_lines(base, folder, result):
    return next((line for line in result.err.splitlines() if line.startswith("lost:")), None)


def process_cases() -> list[Case]:
    """The slow part: real processes killed, signalled, racing, and a real full disk."""
    train = lambda b, f: ["-m", "miam_cli", "train", b.recipe, "--out", f / "run"]  # noqa: E731
    prepare = lambda b, f: ["-m", "miam_cli", "prepare", "geoplant", b.raw, f / "s", "--chunk-size", "16"]  # noqa: E731
    cases = []
    for k in range(1, 13):
        cases.append(Case(f"kill -9 before rename {k} of training, then --resume", "kill -9",
                          lambda b, f: train(b, f)[2:], None, (), _resumed_subprocess("train"), runner=killed_at_rename(k), fast=False))
    for k in range(1, 8):
        cases.append(Case(f"kill -9 before rename {k} of prepare, then again", "kill -9",
                          lambda b, f: prepare(b, f)[2:], None, (), _resumed_subprocess("prepare"), runner=killed_at_rename(k), fast=False))
    for k in (3, 12):
        cases.append(Case(f"kill -9 before rename {k} of a map, then again", "kill -9", _map_case(None, "--tile", "4"), None, (),
                          _map_resumes, runner=killed_at_rename(k), fast=False))
    cases += [
        Case("SIGTERM during start-up exits 75, then --resume", "signals", lambda b, f: train(b, f)[2:], 75, ("--resume",),
             _resumed_subprocess("train"), runner=_sigterm_during_startup, fast=False),
        Case("SIGTERM during the demo exits 75 with one line", "signals",
             lambda b, f: ["demo", "--out", f / "demo", "--surveys", "100", "--epochs", "1", "--no-maps"], 75,
             ("stopped:", "run the same command again"), runner=_sigterm_during_startup, fast=False),
        Case("prepare --workers 2: workers die with a killed parent", "resources",
             lambda b, f: [*prepare(b, f)[2:], "--workers", "2"], 0, runner=_workers_die_with_parent, fast=False),
        Case("two identical prepares at once", "concurrency", lambda b, f: prepare(b, f)[2:], 0, (), _store_whole,
             runner=_concurrent_prepares, fast=False),
        Case("a real full disk (tmpfs) during training, then --resume", "disk", lambda b, f: [b.recipe, b.run], 1,
             ("No space left", "checkpoints"), _lost_lines, runner=_full_disk_training, fast=False),
    ]
    return cases


def bitflip_cases(n: int = 40) -> list[Case]:
    """`n` stores with one random bit flipped in one random chunk: `store verify` must name the chunk."""
    def setup(i):
        def make(base, folder):
            store = base.copy("store", folder / "s")
            flip_bits(store, random.Random(1000 + i), 1)
            return ["store", "verify", store]
        return make
    return [Case(f"bit flip #{i + 1}: store verify", "bit flips", setup(i), 2, ("tokens.zarr", "checksum"), fast=i < 3) for i in range(n)]
