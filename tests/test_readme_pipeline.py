"""The pip user's path: a wheel (not an editable install) in a fresh virtual environment, used from
an empty folder, with the commands of the README's pipeline block as typed (at small sizes).

The fresh environment gets miam from the wheel alone; its dependencies come from this test's
environment through a `.pth` line (that folder's editable-install hook is not run from a `.pth`
path), so nothing is downloaded and the installed miam is the only one it can import.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "miam_cli", "docs")
# what the block's sizes become here: the same commands, minutes -> seconds
SMALL = {"--surveys 3000": "--surveys 300"}
TRAIN_SMALL = ["train.epochs=1"]
DEMO_SMALL = ["--surveys", "300", "--epochs", "1", "--budget", "60", "--out", "demo-out"]


def readme_pipeline() -> list[str]:
    """The README's pipeline block, one command a line, comments dropped."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## The pipeline, one command per stage", 1)[1].split("```", 2)[1]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("SLURM_")}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """bin/ of a fresh venv holding miam installed from a wheel built from this source tree."""
    work = tmp_path_factory.mktemp("pip-user")
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    # the PEP 517 backend itself (pip's build front end probes package indexes first: a minute here)
    wheel = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                            "print(build_meta.build_wheel(sys.argv[1]))", str(work / "dist")],
                           cwd=src, capture_output=True, text=True, env=_env())
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    venv = work / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "deps-from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                          "--no-index", "-q", str(work / "dist" / wheel.stdout.strip().splitlines()[-1])],
                         capture_output=True, text=True, env=_env())
    assert pip.returncode == 0, pip.stderr[-3000:]
    return venv / "bin"


def miam(bin_dir: Path, cwd: Path, command: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    args = shlex.split(command)
    assert args[0] == "miam", command
    env = {**_env(), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run([str(bin_dir / "miam"), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_installed_package_finds_its_recipes_and_docs_from_an_empty_folder(installed, tmp_path):
    done = miam(installed, tmp_path, "miam validate recipes/demo.yaml")
    assert done.returncode == 0, done.stderr
    site = installed.parent / "lib"
    used = re.search(r"^recipe: (\S+) \(packaged with miam", done.stderr, re.M)
    assert used and Path(used[1]).is_relative_to(site) and Path(used[1]).name == "demo.yaml", done.stderr
    assert "lambda: 1.0" in done.stdout
    done = miam(installed, tmp_path, "miam docs --json")
    assert done.returncode == 0, done.stderr
    files = [Path(f) for f in json.loads(done.stdout)["files"]]
    assert {f.name for f in files} >= {"cli.md", "dataset-spec.md", "hpc.md"} and all(f.is_relative_to(site) for f in files)
    assert files[[f.name for f in files].index("cli.md")].read_text() == (ROOT / "docs" / "cli.md").read_text()
    done = miam(installed, tmp_path, "miam recipes cp taxabench")
    assert done.returncode == 0 and (tmp_path / "taxabench.yaml").read_text() == (ROOT / "recipes" / "taxabench.yaml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taxabench.yaml"]  # nothing else written


@pytest.mark.slow
def test_the_readme_pipeline_runs_as_typed_from_an_empty_folder(installed, tmp_path):
    commands = readme_pipeline()
    assert commands[0].startswith("miam synth geoplant") and commands[-1] == "miam demo", commands
    outputs = {}
    for typed in commands:
        command = typed
        for big, small in SMALL.items():
            command = command.replace(big, small)
        if command.startswith("miam train "):
            command += " " + " ".join(TRAIN_SMALL)
        if command == "miam demo":
            command += " " + " ".join(DEMO_SMALL)
        done = miam(installed, tmp_path, command)
        assert done.returncode == 0 and "Traceback" not in done.stderr, f"{command}\n{done.stderr[-3000:]}"
        outputs[typed] = done
    runs = sorted((tmp_path / "runs").iterdir())
    assert [r.name.rsplit("-", 2)[0] for r in runs] == ["demo-miam", "demo-uniform"]
    # train announced its run dir; compare compared what both runs have, and said what it left out
    assert f"run dir: {Path('runs') / runs[0].name}" in outputs["miam train recipes/demo.yaml"].stderr
    compare = next(v for k, v in outputs.items() if k.startswith("miam compare"))
    assert "warning:" in compare.stderr and "sentinel2[band=red,nir]" in compare.stderr
    table = pd.read_csv(tmp_path / "compare" / "compare.csv", index_col="strategy")
    assert list(table.index) == ["miam", "uniform"] and table["average_mean"].notna().all()
    for name in ("sentinel2-by-band-global-context-all-test", "landsat-by-year-global-context-all-test"):
        assert (runs[1] / "attribution" / f"{name}.png").exists()
    assert (tmp_path / "demo-out" / "report.html").exists()
