"""Distributed set-up from the environment: torchrun's variables, else SLURM's, else one process.

PyTorch's own engine does the work (torch.distributed + DistributedDataParallel): NCCL on GPUs,
gloo on CPUs. This module only decides who we are and wires the process group once.

Resolution order (`resolve`):
1. torchrun (or any launcher that sets RANK and WORLD_SIZE, e.g. `torch.multiprocessing` with the
   variables set by hand): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. Checked first
   because torchrun also runs inside SLURM jobs, where SLURM's variables describe the agents
   (one per node), not the workers.
2. SLURM, when a step was started by `srun` with more than one task: SLURM_PROCID (rank),
   SLURM_STEP_NUM_TASKS (or SLURM_NTASKS) (world size), SLURM_LOCALID (local rank); the master is
   MASTER_ADDR if set, else the first host of SLURM_STEP_NODELIST / SLURM_JOB_NODELIST; the port is
   MASTER_PORT if set, else 29500 + job id mod 1000 (two jobs sharing a node rarely collide).
3. Otherwise a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import torch

from miam_cli.errors import UserError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"  # torchrun | slurm | single
    job_id: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = environ.get(name)
    if text is None or text == "":
        if default is None:
            raise UserError(f"environment variable {name} is not set")
        return default
    try:
        return int(text)
    except ValueError:
        raise UserError(f"environment variable {name}={text!r} is not an integer") from None


def resolve(environ: Mapping[str, str] = os.environ) -> DistEnv:
    """torchrun first (it sets RANK/WORLD_SIZE even inside a SLURM job), then SLURM, then single."""
    job = environ.get("SLURM_JOB_ID")
    if "RANK" in environ and "WORLD_SIZE" in environ:
        env = DistEnv(_int(environ, "RANK"), _int(environ, "WORLD_SIZE"), _int(environ, "LOCAL_RANK", 0),
                      environ.get("MASTER_ADDR") or "127.0.0.1", _int(environ, "MASTER_PORT", 29500), "torchrun", job)
    else:
        ntasks = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS") or "1"
        if "SLURM_PROCID" not in environ or _int({"n": ntasks}, "n") <= 1:
            return DistEnv(job_id=job)
        nodes = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST") or "127.0.0.1"
        port = 29500 + (int(job) % 1000 if job and job.isdigit() else 0)
        env = DistEnv(_int(environ, "SLURM_PROCID"), int(ntasks), _int(environ, "SLURM_LOCALID", 0),
                      environ.get("MASTER_ADDR") or first_host(nodes), _int(environ, "MASTER_PORT", port), "slurm", job)
    if env.world_size < 1 or not 0 <= env.rank < env.world_size:
        raise UserError(f"{env.source} environment: rank {env.rank} is not in 0..{env.world_size - 1}")
    return env


def first_host(nodelist: str) -> str:
    """First host of a SLURM node list, without scontrol: `gpu[012-015,020],cpu1` -> `gpu012`,
    `node1` -> `node1`, `a[1,3]` -> `a1`, `r1-n[08-09]-ib,x` -> `r1-n08-ib` (each bracket -> its first value)."""
    text = nodelist.strip()
    host, depth = [], 0
    for ch in text:  # the first entry: up to the first comma outside brackets
        if ch == "," and depth == 0:
            break
        depth += ch == "["
        depth -= ch == "]"
        host.append(ch)
    entry, out, i = "".join(host), [], 0
    while i < len(entry):
        if entry[i] == "[":
            end = entry.find("]", i)
            end = len(entry) if end < 0 else end
            out.append(entry[i + 1:end].split(",")[0].split("-")[0])
            i = end + 1
        else:
            out.append(entry[i])
            i += 1
    return "".join(out) or "127.0.0.1"


def backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


@lru_cache(maxsize=1)
def current() -> DistEnv:
    """This process's place in the job; joins the process group the first time (idempotent)."""
    env = resolve()
    if env.distributed and not torch.distributed.is_initialized():
        name = backend()
        if env.source == "slurm":  # torchrun's own values (possibly its agent's store) must stay untouched
            os.environ["MASTER_ADDR"] = env.master_addr
            os.environ["MASTER_PORT"] = str(env.master_port)
        os.environ.setdefault("MASTER_ADDR", env.master_addr)
        os.environ.setdefault("MASTER_PORT", str(env.master_port))
        if name == "nccl":
            # with one GPU bound per task (--gpus-per-task=1) each task sees a single device 0
            torch.cuda.set_device(env.local_rank % max(1, torch.cuda.device_count()))
        torch.distributed.init_process_group(name, rank=env.rank, world_size=env.world_size)
    return env


def shutdown() -> None:
    """Leave the process group (end of training); a later `current()` resolves and joins afresh."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    current.cache_clear()


def wrap(model: torch.nn.Module, device: torch.device):
    env = current()
    if not env.distributed:
        return model
    if device.type == "cuda":
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return torch.nn.parallel.DistributedDataParallel(model)


def local_rows(n: int, env: DistEnv) -> torch.Tensor:
    """This rank's contiguous slice of a global batch of n rows: rank r gets rows [r n / W, (r+1) n / W),
    so slice sizes differ by at most one; with n < W some ranks get none. The trainer weights each
    rank's loss by its slice size (`slice_weight`), so unequal slices still give the global mean."""
    start = env.rank * n // env.world_size
    stop = (env.rank + 1) * n // env.world_size
    return torch.arange(start, stop)


def slice_weight(n_local: int, n: int, env: DistEnv) -> float:
    """Factor on a rank's mean loss over its slice so that DDP's gradient average (sum over ranks / W)
    equals the gradient of the mean over the whole global batch: W n_local / n (1 with one process)."""
    return 1.0 if not env.distributed else env.world_size * n_local / n


def _device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean(value: float, env: DistEnv) -> float:
    """The average of `value` over ranks (every rank gets it)."""
    if not env.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_device())
    torch.distributed.all_reduce(t)
    return float(t.item() / env.world_size)


def any_true(flag: bool, env: DistEnv) -> bool:
    """True on every rank if it is true on any (e.g. a stop signal that reached some ranks only)."""
    if not env.distributed:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_device())
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def barrier(env: DistEnv) -> None:
    if env.distributed:
        torch.distributed.barrier()


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's `obj` (picklable) on every rank."""
    if not env.distributed:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
