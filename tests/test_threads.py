"""The thread policy: where the budget comes from, how it is shared, and that every command applies it."""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch

from miam_cli import threads
from miam_cli.recipe import validate_recipe
from miam_cli.engine.train import train
from miam_cli.errors import UserError


@pytest.fixture
def four_cpus(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)


@pytest.fixture
def fresh(monkeypatch):
    """No plan yet in this process, and torch's thread count restored afterwards."""
    monkeypatch.setattr(threads, "_current", None)
    monkeypatch.setattr(threads, "_logged", None)
    monkeypatch.delenv("MIAM_THREAD_POLICY", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_budget_order_request_then_slurm_then_omp_then_affinity(four_cpus):
    env = {"SLURM_CPUS_PER_TASK": "3", "OMP_NUM_THREADS": "2"}
    assert threads.budget(1, env) == (1, "--threads")
    assert threads.budget(None, env) == (3, "SLURM_CPUS_PER_TASK")
    assert threads.budget(None, {"OMP_NUM_THREADS": "2"}) == (2, "OMP_NUM_THREADS")
    assert threads.budget(None, {"OMP_NUM_THREADS": "2,1"}) == (2, "OMP_NUM_THREADS")  # OpenMP's nested form
    assert threads.budget(None, {}) == (4, "os.sched_getaffinity")
    # unusable values fall through to the next source
    assert threads.budget(None, {"SLURM_CPUS_PER_TASK": "", "OMP_NUM_THREADS": "0"}) == (4, "os.sched_getaffinity")
    assert threads.budget(None, {"SLURM_CPUS_PER_TASK": "many"}) == (4, "os.sched_getaffinity")


def test_environment_budget_is_capped_at_the_cpus_available_but_a_request_is_not(four_cpus):
    total, source = threads.budget(None, {"SLURM_CPUS_PER_TASK": "32"})
    assert total == 4 and "capped" in source and "32" in source
    assert threads.budget(8, {}) == (8, "--threads")
    with pytest.raises(UserError, match="--threads 0"):
        threads.budget(0, {})


def test_budget_is_divided_among_workers_and_torchrun_ranks_never_exceeding_it(four_cpus):
    assert threads.plan(None, 0, {}).per_process == 4
    workers = threads.plan(None, 2, {})
    assert (workers.processes, workers.per_process) == (2, 2)
    odd = threads.plan(None, 3, {})
    assert odd.per_process * odd.processes <= 4 and odd.per_process == 1
    torchrun = {"RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "SLURM_CPUS_PER_TASK": "4"}
    assert threads.plan(None, 0, torchrun).per_process == 1  # 4 ranks on this node share the task's 4 CPUs
    by_hand = {"RANK": "0", "WORLD_SIZE": "2"}  # started by hand (no LOCAL_WORLD_SIZE): assume one node
    assert threads.plan(None, 0, by_hand).per_process == 2
    # srun's tasks each have their own SLURM_CPUS_PER_TASK: no sharing
    srun = {"SLURM_PROCID": "1", "SLURM_NTASKS": "4", "SLURM_CPUS_PER_TASK": "2"}
    assert threads.plan(None, 0, srun).per_process == 2
    # more workers than CPUs: one thread each, and the log line says so
    crowded = threads.plan(2, 3, {})
    assert crowded.per_process == 1 and "more processes than CPUs" in crowded.describe()


def test_configure_applies_and_prints_once_and_an_earlier_plan_stands(fresh, four_cpus, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    lines = []
    plan = threads.configure(None, log=lines.append)
    assert torch.get_num_threads() == plan.per_process == 2
    threads.configure(None, log=lines.append)
    assert lines == [plan.describe()] and lines[0].startswith("threads: 2 per process; budget 2 from OMP_NUM_THREADS")
    threads.configure(1, log=lines.append)  # an explicit request always applies
    assert torch.get_num_threads() == 1 and len(lines) == 2
    again = threads.configure(None, log=lines.append)  # e.g. train() inside `miam demo --threads 1`
    assert again.per_process == 1 and again.source == "--threads" and len(lines) == 2


def test_limited_restores_the_callers_thread_count(fresh, four_cpus):
    torch.set_num_threads(1)
    with threads.limited(3) as plan:
        assert plan.per_process == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == 1 and threads._current is None


def test_policy_off_leaves_torch_alone(fresh, monkeypatch):
    monkeypatch.setenv("MIAM_THREAD_POLICY", "off")
    torch.set_num_threads(1)
    assert threads.configure(2) is None and torch.get_num_threads() == 1
    env = {"MIAM_THREAD_POLICY": "off"}
    threads.set_wait_policy(env)
    assert "OMP_WAIT_POLICY" not in env


def test_wait_policy_is_passive_unless_the_user_chose(monkeypatch):
    env = {}
    threads.set_wait_policy(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    threads.set_wait_policy(env)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE"


def test_spawned_workers_start_with_their_share(fresh, four_cpus):
    threads.configure(4, workers=2)
    share = threads.worker_threads(2)
    assert share == 2 and torch.get_num_threads() == 2  # the parent takes a worker's share too
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=threads.init_worker, initargs=(share,)) as pool:
        seen = [pool.submit(os.getenv, name).result() for name in threads.THREAD_ENV]
    assert seen == [str(share)] * len(threads.THREAD_ENV)


def test_commands_take_threads_and_print_the_choice(cli, evaluated_run, tmp_path):
    code, _, err = cli("eval-subsets", evaluated_run, "--subsets", "unimodal", "--threads", "1", "--device", "cpu")
    assert code == 0, err
    assert "threads: 1 per process; budget 1 from --threads" in err
    code, _, err = cli("attribute", evaluated_run, "--threads", "0", "--out", tmp_path)
    assert code == 2 and "--threads" in err and "Traceback" not in err


def test_recipe_threads_are_validated_and_used_for_training(tiny_store, tmp_path, fresh):
    with pytest.raises(UserError, match="train.threads"):
        validate_recipe({"store": str(tiny_store), "train": {"threads": 0}})
    recipe = validate_recipe({"store": str(tiny_store), "model": {"d_model": 16},
                              "train": {"epochs": 1, "batch_size": 256, "threads": 2}})
    lines, seen = [], []
    torch.set_num_threads(1)
    train(recipe, tmp_path / "run", log=lines.append, progress=lambda *_: seen.append(torch.get_num_threads()))
    assert set(seen) == {2}  # every step ran on the recipe's threads
    assert any(line.startswith("threads: 2 per process; budget 2 from train.threads") for line in lines)
    assert torch.get_num_threads() == 1  # and the caller's count is back
