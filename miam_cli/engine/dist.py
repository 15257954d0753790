"""Distributed set-up from the environment: torchrun's variables, else SLURM's, else one process.

PyTorch's own engine does the work (torch.distributed + DistributedDataParallel): NCCL on GPUs,
gloo on CPUs. This module only decides who we are and wires the process group once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import torch


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


def resolve(environ: Mapping[str, str] = os.environ) -> DistEnv:
    """torchrun first (it sets RANK/WORLD_SIZE even inside a SLURM job), then SLURM, then single."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return DistEnv(int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", 0)),
                       environ.get("MASTER_ADDR", "127.0.0.1"), int(environ.get("MASTER_PORT", 29500)), "torchrun",
                       environ.get("SLURM_JOB_ID"))
    if "SLURM_PROCID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1:
        job = environ.get("SLURM_JOB_ID")
        return DistEnv(int(environ["SLURM_PROCID"]), int(environ["SLURM_NTASKS"]), int(environ.get("SLURM_LOCALID", 0)),
                       first_host(environ.get("SLURM_JOB_NODELIST", environ.get("SLURM_NODELIST", "127.0.0.1"))),
                       int(environ.get("MASTER_PORT", 29500 + (int(job) % 1000 if job and job.isdigit() else 0))), "slurm", job)
    return DistEnv(job_id=environ.get("SLURM_JOB_ID"))


def first_host(nodelist: str) -> str:
    """First host of a SLURM node list: `gpu[012-015,020],cpu1` -> `gpu012` (scontrol is not needed)."""
    head = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not head:
        return nodelist
    prefix, ranges = head.group(1), head.group(3)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


@lru_cache(maxsize=1)
def current() -> DistEnv:
    env = resolve()
    if env.distributed and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        os.environ.setdefault("MASTER_ADDR", env.master_addr)
        os.environ.setdefault("MASTER_PORT", str(env.master_port))
        if backend == "nccl":
            torch.cuda.set_device(env.local_rank)
        torch.distributed.init_process_group(backend, rank=env.rank, world_size=env.world_size)
    return env


def wrap(model: torch.nn.Module, device: torch.device):
    env = current()
    if not env.distributed:
        return model
    ids = [device.index or 0] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def local_rows(n: int, env: DistEnv) -> torch.Tensor:
    """This rank's contiguous slice of a global batch of n rows (equal sizes, the last rank takes the rest)."""
    per = n // env.world_size
    start = env.rank * per
    stop = n if env.rank == env.world_size - 1 else start + per
    return torch.arange(start, stop)


def mean(value: float, env: DistEnv) -> float:
    if not env.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t.item() / env.world_size)


def broadcast_text(text: str | None, env: DistEnv) -> str:
    """Rank 0 decides (e.g. the run dir name), every rank gets the same string."""
    if not env.distributed:
        return text or ""
    box = [text]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
