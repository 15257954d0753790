"""Preemption as SLURM does it: SIGUSR1 to a running `miam train`, exit 75, then `--resume` to the end.

The resumed run must end with exactly the weights of an uninterrupted run (CPU, one thread): last.pt
holds the epoch-start shuffle state, the mask generator's state, torch's RNG state, the optimizer,
the scheduler, the strategy and the monitor, so the remaining steps replay bit for bit.
"""

from __future__ import annotations

import csv
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from miam_cli.recipe import validate_recipe
from miam_cli.engine.train import PREEMPTED_EXIT_CODE, train
from miam_cli.synth.tokens import make_token_store

EPOCHS = 6  # the signal goes out as soon as epoch 1 is checkpointed: 5 epochs (seconds) of margin


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("preempt")
    store = make_token_store(base / "store", n=300)
    recipe = {"store": str(store), "model": {"d_model": 16, "dropout": 0.1},  # dropout: torch's RNG state matters too
              "train": {"epochs": EPOCHS, "batch_size": 32}}
    (base / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return base, recipe


def _miam(*args) -> list[str]:
    return [sys.executable, "-m", "miam_cli", *map(str, args)]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in ("RANK", "WORLD_SIZE")}
    return {**env, "OMP_NUM_THREADS": "1"}


def _signal_once_checkpointed(proc: subprocess.Popen, last: Path) -> None:
    """SIGUSR1 as soon as the first last.pt exists (the run is mid-training, as under SLURM)."""
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before the signal could be sent"
    os.kill(proc.pid, signal.SIGUSR1)


def test_sigusr1_writes_last_pt_exits_75_and_resume_ends_identical(setup):
    base, recipe = setup
    run = base / "run"
    proc = subprocess.Popen(_miam("train", base / "recipe.yaml", "--out", run), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = run / "checkpoints" / "last.pt"
    _signal_once_checkpointed(proc, last)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT_CODE == 75, err[-2000:]
    assert "preempted" in err and "--resume" in err
    assert f"run dir: {run}" in err.splitlines()[1]  # announced at the start (after the recipe line)
    hint = next(line for line in err.splitlines() if line.startswith("preempted:")).split("continue with: ", 1)[1]
    assert hint == f"miam train {run / 'recipe.yaml'} --out {run} --resume"  # the real path, runnable as printed

    ckpt = torch.load(last, weights_only=True)  # a complete, safely loadable checkpoint
    progress = ckpt["progress"]
    assert 1 <= progress["epoch"] < EPOCHS
    assert 0 <= progress["step_in_epoch"] <= 7  # 211 train samples / 32: 7 steps per epoch
    assert progress["global_step"] == 7 * progress["epoch"] + progress["step_in_epoch"]
    assert len(ckpt["metrics"]) == progress["epoch"]
    assert len(list(csv.DictReader(open(run / "metrics.csv")))) == progress["epoch"]

    resumed = subprocess.run(_miam(*shlex.split(hint)[1:]), env=_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr

    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1): the same kernels, the same bits
    full = train(validate_recipe(recipe), base / "full", log=lambda *_: None).run_dir
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert b["progress"]["epoch"] == EPOCHS
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows_a = list(csv.DictReader(open(full / "metrics.csv")))
    rows_b = list(csv.DictReader(open(run / "metrics.csv")))
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert float(rb["train_loss"]) == pytest.approx(float(ra["train_loss"]), rel=1e-12)
        assert rb["val_auc"] == ra["val_auc"]


def test_the_trainer_restores_the_signal_handlers(setup, tmp_path):
    """After training, SIGTERM and SIGUSR1 act as before (a later pipeline stage can still be stopped)."""
    _, recipe = setup
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)
    torch.set_num_threads(1)
    train(validate_recipe({**recipe, "train": {"epochs": 1, "batch_size": 128}}), tmp_path / "run", log=lambda *_: None)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)) == before


def test_resume_of_a_finished_run_changes_nothing(setup, tmp_path):
    """A requeue that arrives after the last epoch (the job script always passes --resume) is harmless."""
    _, recipe = setup
    torch.set_num_threads(1)
    cfg = validate_recipe({**recipe, "train": {"epochs": 1, "batch_size": 128}})
    run = train(cfg, tmp_path / "run", log=lambda *_: None).run_dir
    before = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    train(cfg, run, resume=True, log=lambda *_: None)
    after = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(list(csv.DictReader(open(run / "metrics.csv")))) == 1


FAKE_SRUN = """#!/bin/bash
# srun stand-in: drop srun's options and run the command in place (exec: a signal to it reaches torchrun)
while [[ $# -gt 0 && $1 == --* ]]; do shift; done
exec "$@"
"""
FAKE_SCONTROL = """#!/bin/bash
case "$1 $2" in
  "show hostnames") echo 127.0.0.1 ;;
  requeue*) echo "$*" >> "$FAKE_SCONTROL_LOG" ;;
esac
"""


def test_train_sbatch_forwards_usr1_through_torchrun_and_requeues(setup, tmp_path):
    """recipes/slurm/train.sbatch with stand-ins for srun and scontrol on one "node" with 2 CPU workers:
    SIGUSR1 to the batch shell (what --signal=B:USR1@120 does) reaches the workers through torchrun,
    last.pt is written, and the script asks for a requeue instead of failing."""
    base, _ = setup
    script = Path(__file__).resolve().parents[1] / "recipes" / "slurm" / "train.sbatch"
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    env = {**_env(), "PATH": f"{fake}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "FAKE_SCONTROL_LOG": str(tmp_path / "scontrol.log"), "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node1",
           "SLURM_NNODES": "1", "SLURM_GPUS_ON_NODE": "2", "SLURM_CPUS_PER_TASK": "2"}
    proc = subprocess.Popen(["bash", str(script), str(base / "recipe.yaml"), "run", f"train.epochs={EPOCHS * 3}"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    _signal_once_checkpointed(proc, last)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert "SIGUSR1" in out and "requeueing job 4242" in out
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    stops = [line for line in out.splitlines() if line.startswith("preempted: stopped at epoch")]
    # one line per job: only rank 0 reports (that both ranks stop after the same step is asserted in
    # test_distributed.py::test_a_stop_seen_by_one_rank_stops_both_and_the_resumed_run_ends_identical)
    assert len(stops) == 1, stops
    progress = torch.load(last, weights_only=True)["progress"]
    assert progress["epoch"] < EPOCHS * 3


def test_a_stop_signal_anywhere_in_the_demo_exits_75_with_one_line(cli, monkeypatch, tmp_path):
    """`miam demo` continues when run again: SIGTERM at any step (here: inside it) is exit 75 and one
    line saying so, never a traceback, and the handlers in place before come back."""
    import miam_cli.pipeline.demo as demo

    def stopped_inside(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("SIGTERM did not stop the demo")

    monkeypatch.setattr(demo, "run_demo", stopped_inside)
    before = signal.getsignal(signal.SIGTERM)
    code, out, err = cli("demo", "--out", tmp_path / "demo")
    assert code == PREEMPTED_EXIT_CODE and "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("threads:")]
    assert len(lines) == 1 and lines[0].startswith("stopped: SIGTERM received") and "run the same command again" in lines[0], err
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_demo_continues_a_run_it_stopped_instead_of_reusing_it(tmp_path):
    """A demo stopped after epoch 1 of 2 left best.pt and metrics.csv: run again, it trains epoch 2
    (before: it took the half-trained run as finished)."""
    from miam_cli.runs.checkpoint import load_checkpoint
    from miam_cli.pipeline.demo import _train_once

    store = make_token_store(tmp_path / "store", n=120)
    recipe = {"store": str(store), "model": {"d_model": 8, "depth": 1, "heads": 2}, "train": {"epochs": 1, "batch_size": 32}}
    run = train(validate_recipe(recipe), tmp_path / "run", log=lambda *_: None).run_dir  # as a demo stopped after epoch 1 leaves it
    logged = []
    _train_once(validate_recipe({**recipe, "train": {**recipe["train"], "epochs": 2}}), run, logged.append, None)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["progress"]["epoch"] == 2
    assert not any(m.startswith("reusing") for m in logged)
    logged.clear()
    _train_once(validate_recipe({**recipe, "train": {**recipe["train"], "epochs": 2}}), run, logged.append, None)
    assert logged == [f"reusing {run}"]  # finished: not trained again
