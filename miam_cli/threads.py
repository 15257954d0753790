"""How many CPU threads a miam process uses: one policy, used by every command that computes.

Budget (CPUs the whole launch may use on this node), the first that is set:
  1. `--threads N` (or `train.threads` in a recipe),
  2. `SLURM_CPUS_PER_TASK` (what a SLURM job asked for; torch's own default ignores it),
  3. `OMP_NUM_THREADS`,
  4. the CPUs this process may run on (`os.sched_getaffinity`: cgroups/cpusets and taskset shrink it).
A budget from the environment is capped at the CPUs the process may run on.

The budget is divided among the processes that draw from it, so that together they never use more:
`prepare --workers W` gives each of its W decoding processes (and itself) budget // W threads, and
the ranks that torchrun starts on one node (`LOCAL_WORLD_SIZE`) each get budget // ranks. Ranks that
srun starts are separate SLURM tasks, each with its own `SLURM_CPUS_PER_TASK`, so they do not share.

OpenMP's wait policy. torch's CPU build uses GNU OpenMP, whose idle threads spin before they sleep.
When the cores are shared (other jobs, or more threads than cores), a spinning thread burns the
time slice that the thread it waits for needs, which is what turned oversubscription into 10-34x
slower training steps. miam sets `OMP_WAIT_POLICY=PASSIVE` unless it is already set; OpenMP reads it
once, when torch is loaded, so `miam`'s entry point sets it before anything imports torch
(`set_wait_policy`). `benchmarks/threads_bench.py` measures its cost when the machine is idle.

`MIAM_THREAD_POLICY=off` leaves threads and the wait policy to torch and OpenMP (for comparisons).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

WAIT_POLICY = "PASSIVE"
# libraries that read a thread count from the environment when they load (spawned workers load them after we set these)
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class ThreadPlan:
    budget: int  # CPUs the launch may use on this node
    source: str  # where the budget came from
    processes: int  # processes sharing the budget (prepare workers, or torchrun's ranks on this node)
    per_process: int  # torch threads of each of them
    sharing: str = ""  # what the processes are, for the log line

    def describe(self) -> str:
        shared = f" x {self.processes} {self.sharing}" if self.processes > 1 else ""
        over = " (more processes than CPUs)" if self.processes > self.budget else ""
        return f"threads: {self.per_process} per process{shared}{over}; budget {self.budget} from {self.source}; {_wait_note()}"


def disabled(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("MIAM_THREAD_POLICY", "").strip().lower() == "off"


_late_wait_policy = False  # set here after torch (and OpenMP) had loaded: no effect in this process


def set_wait_policy(environ=os.environ) -> None:
    """Passive OpenMP waiting unless the user chose otherwise; call before torch is imported."""
    global _late_wait_policy
    if not disabled(environ) and "OMP_WAIT_POLICY" not in environ:
        environ["OMP_WAIT_POLICY"] = WAIT_POLICY
        _late_wait_policy = environ is os.environ and "torch" in sys.modules


def _wait_note() -> str:
    policy = os.environ.get("OMP_WAIT_POLICY")
    if _late_wait_policy:
        return f"OMP_WAIT_POLICY={policy} for child processes (OpenMP had already started here)"
    return f"OMP_WAIT_POLICY={policy}" if policy else "OpenMP's default wait policy (spins)"


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity call
        return os.cpu_count() or 1


def _positive(environ: Mapping[str, str], name: str) -> int | None:
    """An integer >= 1 from the environment; SLURM writes e.g. `4`, OpenMP allows `4,2` (nested levels)."""
    text = environ.get(name, "").split(",")[0].strip()
    return int(text) if text.isdigit() and int(text) >= 1 else None


def budget(requested: int | None = None, environ: Mapping[str, str] = os.environ, label: str = "--threads") -> tuple[int, str]:
    """(CPUs, where the number came from), by the order in the module docstring; `label` names the
    request (`--threads`, or `train.threads` from a recipe)."""
    if requested is not None:
        if requested < 1:
            from miam_cli.errors import UserError

            raise UserError(f"{label} {requested}: give at least 1")
        return requested, label
    cpus = available_cpus()
    for name in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = _positive(environ, name)
        if value is not None:
            return (value, name) if value <= cpus else (cpus, f"{name}={value}, capped at the {cpus} CPUs available")
    return cpus, "os.sched_getaffinity"


def local_ranks(environ: Mapping[str, str] = os.environ) -> int:
    """Processes of this job on this node that share one budget: torchrun's workers (they inherit
    the agent's CPUs); 1 otherwise (srun's tasks each have their own)."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return _positive(environ, "LOCAL_WORLD_SIZE") or _positive(environ, "WORLD_SIZE") or 1
    return 1


def plan(requested: int | None = None, workers: int = 0, environ: Mapping[str, str] = os.environ,
         label: str = "--threads") -> ThreadPlan:
    """The threads of each process: the budget divided among the workers (or the local ranks)."""
    return _divide(*budget(requested, environ, label), workers, environ)


def _divide(total: int, source: str, workers: int, environ: Mapping[str, str] = os.environ) -> ThreadPlan:
    processes, sharing = (workers, "prepare workers") if workers > 1 else (local_ranks(environ), "ranks on this node")
    return ThreadPlan(total, source, processes, max(1, total // max(1, processes)), sharing)


_current: ThreadPlan | None = None  # the plan this process runs under (torch's thread count is process-wide)
_logged: str | None = None


def configure(requested: int | None = None, workers: int = 0, log: Callable[[str], None] | None = None,
              label: str = "--threads") -> ThreadPlan | None:
    """Apply the policy to this process and say so once. An explicit `requested` always applies; with
    None, a plan this process already has stands (e.g. `miam demo --threads 1` calling train)."""
    global _current, _logged
    if disabled():
        return None
    if requested is None and _current is not None:
        chosen = _divide(_current.budget, _current.source, workers)
    else:
        chosen = plan(requested, workers, label=label)
    _set_threads(chosen.per_process)
    _current = chosen
    line = chosen.describe()
    if log is not None and line != _logged:
        log(line)
        _logged = line
    return chosen


@contextlib.contextmanager
def limited(requested: int | None = None, log: Callable[[str], None] | None = None,
            label: str = "--threads") -> Iterator[ThreadPlan | None]:
    """`configure` for the duration of a library call (train), restoring the caller's thread count after."""
    global _current
    import torch

    before, before_plan = torch.get_num_threads(), _current
    try:
        yield configure(requested, log=log, label=label)
    finally:
        torch.set_num_threads(before)
        _current = before_plan


def _set_threads(count: int) -> None:
    """torch's thread count now if torch is loaded; else through the environment, which torch (and
    MKL, OpenBLAS) read when they load: a command that never needs torch does not pay for importing it."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
    else:
        for name in THREAD_ENV:
            os.environ[name] = str(count)


def worker_threads(workers: int) -> int:
    """Threads of each of `workers` decoding processes under the current plan (or the default one)."""
    if disabled():
        return 0
    base = _current if _current is not None else plan()
    return max(1, base.budget // max(1, workers))


def init_worker(threads: int) -> None:
    """ProcessPoolExecutor initializer: runs in a spawned worker before it imports numpy or torch, so
    the thread counts in the environment are the ones their libraries start with."""
    if threads >= 1:
        _set_threads(threads)
