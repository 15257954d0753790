"""Shared fixtures: tiny token stores with planted truth and tiny trained runs, built once per session.

Runs are trained once and treated as read-only; a test that writes into a run dir (eval/,
attribution/) takes `run_copy`, a private copy of the shared run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from miam_cli import threads
from miam_cli.cli.main import main
from miam_cli.recipe import validate_recipe
from miam_cli.engine.train import train
from miam_cli.synth.tokens import make_token_store

# Tiny models train several times faster on one thread than on two contended ones (2 shared cores):
# the process's thread plan is one thread, whatever the environment (library calls such as train()
# keep it; a test that wants more asks for it, e.g. with train.threads).
threads.configure(1)
TINY_MODEL = {"d_model": 32}
TINY_TRAIN = {"epochs": 4, "batch_size": 128}


def _quiet(*_args, **_kwargs) -> None:
    pass


def train_tiny(store: Path, out: Path, modalities=None, masking: dict | None = None, **train_cfg) -> Path:
    """Train a tiny model on `store` into `out` (a new dir); returns the run dir."""
    torch.set_num_threads(1)
    recipe = {"store": str(store), "model": dict(TINY_MODEL), "train": {**TINY_TRAIN, **train_cfg}}
    if modalities is not None:
        recipe["modalities"] = modalities
    if masking:
        recipe["masking"] = masking
    return train(validate_recipe(recipe), out=out, log=_quiet).run_dir


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of a run dir (recipe, env, checkpoints, metrics), without eval/ and attribution/."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("eval", "attribution"))
    return dest


@pytest.fixture(autouse=True, scope="session")
def _crash_logs_in_tmp(tmp_path_factory):
    """The last-resort handler's traceback logs go to a temporary folder, not the user's cache."""
    os.environ.setdefault("MIAM_LOG_DIR", str(tmp_path_factory.mktemp("crash-logs")))


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """1,200 samples (850 train / 178 val / 172 test), 6 classes, multi-label; tabular (5 variables),
    image (4 bands x 2x2 patches; red and nir informative), series (years 2000-2005; 2003 the event)."""
    torch.set_num_threads(1)
    return make_token_store(tmp_path_factory.mktemp("tiny-store") / "store", n=1200)


@pytest.fixture(scope="session")
def tiny_run(tiny_store, tmp_path_factory) -> Path:
    """A MIAM run (4 epochs, d_model 32) on `tiny_store`. Read-only: copy it before writing into it."""
    return train_tiny(tiny_store, tmp_path_factory.mktemp("tiny-run") / "run")


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of `tiny_run` (no eval/ or attribution/ yet) that a test may write into."""
    return copy_run(tiny_run, tmp_path / "run")


@pytest.fixture(scope="session")
def evaluated_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of `tiny_run` with eval/subsets.csv for all 7 subsets of the test split. Read-only."""
    from miam_cli.evaluate.subsets import run_eval_subsets

    run = copy_run(tiny_run, tmp_path_factory.mktemp("evaluated") / "run")
    run_eval_subsets(run)
    return run


@pytest.fixture(scope="session")
def tiny_trainer():
    """`tiny_trainer(store, out, modalities=None, masking=None, **train_cfg) -> run dir` (see train_tiny)."""
    return train_tiny


@pytest.fixture
def cli(capsys):
    """`cli(*args) -> (exit code, stdout, stderr)`: the `miam` command run in-process."""

    def invoke(*args):
        capsys.readouterr()  # drop what earlier steps printed
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        return info.value.code, captured.out, captured.err

    return invoke


@pytest.fixture(scope="session")
def landscape(tmp_path_factory) -> Path:
    """The synthetic map landscape (`miam_cli.synth.landscape`): climate rasters, a Sentinel-2 mosaic over the
    west of the region, 500 points (about 25 unlabelled), 8 species, and its dataset and map specs."""
    from miam_cli.synth.landscape import synth_landscape

    folder = tmp_path_factory.mktemp("landscape") / "data"
    synth_landscape(folder, points=500, seed=0)
    return folder


@pytest.fixture(scope="session")
def landscape_store(landscape, tmp_path_factory) -> Path:
    """`prepare custom` of the landscape's spec (env: 3 raster values; sentinel2: 16 tokens of 4 x 4 px)."""
    from miam_cli.data.custom import load_spec, plan_custom
    from miam_cli.data.prepare import run_prepare

    store = tmp_path_factory.mktemp("landscape-store") / "store"
    plan, decoder = plan_custom(load_spec(landscape / "spec.yaml"), landscape / "spec.yaml")
    run_prepare(plan, decoder, store, chunk_size=128)
    return store


@pytest.fixture(scope="session")
def landscape_run(landscape_store, tmp_path_factory) -> Path:
    """A tiny MIAM run on `landscape_store`. Read-only: maps and predictions go to a test's own folder."""
    return train_tiny(landscape_store, tmp_path_factory.mktemp("landscape-run") / "run")
