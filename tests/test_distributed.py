"""Distributed training: the environment resolver, and 2 CPU ranks (gloo) against one process.

Tolerances. Two ranks compute the same global-batch gradient as one process, but summed in another
order (per-slice means, then gloo's all-reduce), so numbers agree to float32 rounding, not bit for
bit: per-epoch train losses to rel 1e-4, weights to rel 1e-4 / abs 1e-5, logits to abs 1e-4. One
exception: the key third of each attention `qkv.bias` has an exactly zero gradient (softmax does
not change when every key moves by the same vector), so its "gradient" is rounding noise that Adam
rescales into steps of up to lr; it only has to stay within a few lr of the one-process value.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from miam_cli.engine import dist
from miam_cli.engine.dist import DistEnv, first_host, local_rows, resolve, slice_weight
from miam_cli.recipe import validate_recipe
from miam_cli.engine.train import train
from miam_cli.synth.tokens import make_token_store

REL = 1e-4  # per-epoch train loss, two ranks vs one process
LR = 1e-3


# ------------------------------------------------------------------ the resolver (no processes)
def test_torchrun_variables_win_even_inside_slurm():
    env = resolve({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu012", "MASTER_PORT": "29611",
                   "SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[012-013]"})
    assert env == DistEnv(3, 8, 1, "gpu012", 29611, "torchrun", "4242")
    assert env.distributed and not env.is_main
    # torch.multiprocessing / hand-set variables: master defaults to this host
    env = resolve({"RANK": "0", "WORLD_SIZE": "2"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port, env.source) == (0, 2, 0, "127.0.0.1", 29500, "torchrun")
    assert env.is_main


def test_slurm_srun_tasks():
    environ = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456",
               "SLURM_JOB_NODELIST": "gpu[012-015,020],cpu1"}
    env = resolve(environ)
    assert env == DistEnv(5, 8, 1, "gpu012", 29500 + 456, "slurm", "123456")
    # the step's own task count and node list win over the allocation's; MASTER_* override the derived ones
    env = resolve({**environ, "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "gpu[014-015]", "SLURM_PROCID": "3"})
    assert (env.world_size, env.master_addr) == (4, "gpu014")
    env = resolve({**environ, "MASTER_ADDR": "gpu012-ib", "MASTER_PORT": "31000"})
    assert (env.master_addr, env.master_port) == ("gpu012-ib", 31000)
    # SLURM_NODELIST (older) and no job id
    env = resolve({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_NODELIST": "node1"})
    assert (env.master_addr, env.master_port, env.job_id) == ("node1", 29500, None)


def test_single_process_cases():
    assert resolve({}) == DistEnv()
    # a one-task SLURM job (or an array task) is one process; the job id is kept for env.json
    env = resolve({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3"})
    assert env == DistEnv(job_id="77") and not env.distributed
    assert resolve({"SLURM_NTASKS": "4"}).source == "single"  # no task id: not an srun task
    # inside a one-task step of a bigger allocation, the step's task count wins
    assert resolve({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "1"}).source == "single"


def test_resolver_refuses_nonsense():
    from miam_cli.errors import UserError

    with pytest.raises(UserError, match="RANK"):
        resolve({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(UserError, match="rank 2 is not in 0..1"):
        resolve({"RANK": "2", "WORLD_SIZE": "2"})


@pytest.mark.parametrize("nodes, host", [
    ("gpu[012-015,020],cpu1", "gpu012"),
    ("node1", "node1"),
    ("a[1,3]", "a1"),
    ("a[3-4,1]", "a3"),
    ("node1,node2", "node1"),
    (" cn[0001-0004] ", "cn0001"),
    ("r1-n[08-09]-ib,x", "r1-n08-ib"),
    ("rack[2-3]n[10-11]", "rack2n10"),
    ("", "127.0.0.1"),
])
def test_first_host(nodes, host):
    assert first_host(nodes) == host


@pytest.mark.parametrize("n, world", [(32, 2), (19, 2), (1, 2), (35, 4), (3, 4), (7, 3)])
def test_slices_cover_the_batch_and_weights_give_the_global_mean(n, world):
    """Rank slices partition the global batch; DDP's average of weighted slice means = the global mean."""
    values = torch.linspace(-1, 2, n, dtype=torch.float64) ** 2
    slices = [local_rows(n, DistEnv(rank=r, world_size=world)) for r in range(world)]
    assert torch.equal(torch.cat(slices), torch.arange(n))
    assert max(map(len, slices)) - min(map(len, slices)) <= 1
    ddp = sum(slice_weight(len(s), n, DistEnv(rank=r, world_size=world)) * (values[s].mean() if len(s) else 0.0)
              for r, s in enumerate(slices)) / world
    assert float(ddp) == pytest.approx(float(values.mean()), rel=1e-12)
    assert slice_weight(n, n, DistEnv()) == 1.0


# ------------------------------------------------------------------ two gloo ranks on CPU
RECIPE = {
    "model": {"d_model": 16, "dropout": 0.0},  # dropout draws would differ between 1 and 2 processes
    # 211 train samples: six batches of 35 (ranks take 17 and 18 rows) and a last one of 1 row
    # (rank 0's slice is empty: it runs one row with weight 0)
    "train": {"epochs": 2, "batch_size": 35, "lr": LR, "seed": 3},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_")) and k not in
           ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def _losses(run: Path) -> list[float]:
    return [float(r["train_loss"]) for r in csv.DictReader(open(run / "metrics.csv"))]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_token_store(tmp_path_factory.mktemp("dist-store") / "store", n=300)


@pytest.fixture(scope="module")
def recipe(store):
    return {"store": str(store), **RECIPE}


@pytest.fixture(scope="module")
def one_process(recipe, tmp_path_factory):
    torch.set_num_threads(1)
    return train(validate_recipe(recipe), tmp_path_factory.mktemp("single") / "run", log=lambda *_: None).run_dir


@pytest.fixture(scope="module")
def two_ranks(recipe, tmp_path_factory):
    """`torchrun --standalone --nproc_per_node 2 -m miam_cli train RECIPE --out run`, in an empty folder."""
    base = tmp_path_factory.mktemp("ddp")
    (base / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    work = base / "work"
    work.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "miam_cli", "train", str(base / "recipe.yaml"), "--out", "run"]
    proc = subprocess.run(cmd, cwd=work, env=_child_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, proc


def test_two_ranks_train_like_one_process(recipe, one_process, two_ranks):
    work, proc = two_ranks
    run = work / "run"
    # one run dir, written by rank 0 alone
    assert [p.name for p in work.iterdir()] == ["run"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "env.json", "imbalance.csv", "imbalance.png", "metrics.csv", "recipe.yaml"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    env = json.loads((run / "env.json").read_text())
    assert (env["world_size"], env["dist_source"]) == (2, "torchrun")
    assert proc.stderr.count("epoch 2/2 loss") == 1  # only rank 0 logs

    # the same per-epoch losses (the global batch's mean) and validation metrics
    assert _losses(run) == pytest.approx(_losses(one_process), rel=REL)
    val_1 = [float(r["val_auc"]) for r in csv.DictReader(open(one_process / "metrics.csv"))]
    val_2 = [float(r["val_auc"]) for r in csv.DictReader(open(run / "metrics.csv"))]
    assert val_2 == pytest.approx(val_1, abs=1e-3)

    # the same weights
    a, b = _weights(one_process), _weights(run)
    assert a.keys() == b.keys()
    for k in a:
        if k.endswith("qkv.bias"):  # [q | k | v]: the key third has zero true gradient (see the module doc)
            d = a[k].shape[0] // 3
            torch.testing.assert_close(b[k][:d], a[k][:d], rtol=REL, atol=1e-5)
            torch.testing.assert_close(b[k][2 * d:], a[k][2 * d:], rtol=REL, atol=1e-5)
            assert float((b[k][d:2 * d] - a[k][d:2 * d]).abs().max()) <= 5 * LR
        else:
            torch.testing.assert_close(b[k], a[k], rtol=REL, atol=1e-5, msg=k)

    # and the same function: logits on the validation split
    from miam_cli.data.batch import load_split
    from miam_cli.runs.checkpoint import load_model
    from miam_cli.evaluate.predict import predict
    from miam_cli.store.reader import TokenStore

    m1, _ = load_model(one_process, "last")
    m2, _ = load_model(run, "last")
    val = load_split(TokenStore(recipe["store"]), "val")
    assert abs(predict(m1, val).logits - predict(m2, val).logits).max() < 1e-4


def test_two_ranks_streaming_from_the_store_train_like_one_process(recipe, one_process, tmp_path):
    # max_memory_gb tiny: the train split is read from zarr per step (StoreBatches), each rank
    # reading the values of its own slice and the validity of the whole global batch
    streamed = {**recipe, "train": {**recipe["train"], "max_memory_gb": 1e-6}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(streamed))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "miam_cli", "train", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_child_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _losses(tmp_path / "run") == pytest.approx(_losses(one_process), rel=REL)
    a, b = _weights(one_process), _weights(tmp_path / "run")
    for k in a:
        if not k.endswith("qkv.bias"):  # see the module doc and the test above
            torch.testing.assert_close(b[k], a[k], rtol=REL, atol=1e-5, msg=k)


def test_a_streamed_split_reads_values_of_the_asked_rows_only(store, monkeypatch):
    from miam_cli.data.batch import SplitTensors, StoreBatches
    from miam_cli.store.reader import TokenStore

    token_store = TokenStore(store)
    streamed, in_memory = StoreBatches(token_store, "train"), SplitTensors(token_store, "train")
    read = []
    monkeypatch.setattr(token_store, "read", lambda m, idx, **kw: read.append(list(idx)) or TokenStore.read(token_store, m, idx, **kw))
    rows = torch.tensor([5, 0, 17, 3])
    valid = streamed.valid(rows)
    assert read == []  # validity alone: no values read
    for m in token_store.modalities:
        assert torch.equal(valid[m], in_memory.valid(rows)[m])
    half = streamed.load(rows[2:])
    assert read and all(idx == list(streamed.indices[[17, 3]]) for idx in read)
    for m in token_store.modalities:
        assert torch.equal(half.values[m], in_memory.load(rows[2:]).values[m])
    assert torch.equal(half.target, in_memory.load(rows[2:]).target)


DRIVER = """
import json, sys
import torch
torch.set_num_threads(1)
from miam_cli.recipe import validate_recipe
from miam_cli.engine.train import Preempted, train
cfg, out, resume, stop = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]) or None
try:
    train(validate_recipe(cfg), out, resume=resume, log=lambda *a: None, stop_after_steps=stop)
except Preempted:
    sys.exit(75)
"""


def _launch(driver: Path, recipe: dict, cwds: list[Path], out: str, resume: bool, stops: list[int]) -> list[int]:
    """Two ranks by hand (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, a free port), each in its own cwd."""
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(driver), json.dumps(recipe), out, "1" if resume else "0", str(stops[r])], cwd=cwds[r],
                              env=_child_env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    codes = []
    for p in procs:
        _, err = p.communicate(timeout=180)
        codes.append((p.returncode, err[-2000:]))
    return codes


def test_a_stop_seen_by_one_rank_stops_both_and_the_resumed_run_ends_identical(recipe, two_ranks, tmp_path):
    """Rank 1 alone is asked to stop (as when a signal reaches one node first): both ranks stop after the
    same step, rank 0 writes last.pt, rank 1 writes nothing (it runs in its own empty folder with the same
    relative --out); resumed on 2 ranks, the run ends with exactly the uninterrupted 2-rank run's weights."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    rank0, rank1 = tmp_path / "rank0", tmp_path / "rank1"
    rank0.mkdir()
    rank1.mkdir()
    codes = _launch(driver, recipe, [rank0, rank1], "run", False, [0, 9])  # 7 steps per epoch: stop in epoch 2
    assert [c for c, _ in codes] == [75, 75], codes
    assert list(rank1.iterdir()) == []
    ckpt = torch.load(rank0 / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert (ckpt["progress"]["epoch"], ckpt["progress"]["step_in_epoch"]) == (1, 2)

    codes = _launch(driver, recipe, [rank0, rank0], "run", True, [0, 0])
    assert [c for c, _ in codes] == [0, 0], codes
    a, b = _weights(two_ranks[0] / "run"), _weights(rank0 / "run")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _losses(rank0 / "run") == pytest.approx(_losses(two_ranks[0] / "run"), rel=1e-12)


def test_a_single_process_run_joins_no_process_group(one_process):
    assert not torch.distributed.is_initialized()
    assert not dist.current().distributed
