"""miam's thread policy against torch's defaults, with other work on the same cores.

    python benchmarks/threads_bench.py [--surveys 2000] [--epochs 2]

Each case runs `miam train recipes/demo.yaml` (the demo recipe, on a synthetic GeoPlant store of
--surveys surveys, prepared once into build/bench-cache/) as its own process, the way a user or a
SLURM task would, with a clean environment (no OMP_NUM_THREADS, no SLURM variables) plus what the
case sets:

  (a) one training under the policy's default (the CPUs this process may use; OMP_WAIT_POLICY=PASSIVE);
  (b) two concurrent trainings, each with SLURM_CPUS_PER_TASK = half the CPUs (two SLURM tasks on one node);
  (c) two concurrent trainings with torch's defaults (MIAM_THREAD_POLICY=off: torch's thread count, OpenMP spins);
  (d) one training while two CPU-bound busy loops run beside it, with the policy and with torch's defaults;
  (e) one training with torch's defaults on the otherwise idle machine (the policy's cost when nothing competes).

Wall time is the process's, from start to exit (both processes for (b) and (c)); per-step time is
the training loop's own (metrics.csv `seconds` over the steps). Targets: (b) <= 0.85 x two (a) in a
row; (d) with the policy <= 3x (a)'s per-step time. The machine's load average is printed before and
after: on a shared machine other processes change every absolute figure, so compare the ratios.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "bench-cache"
RECIPE = ROOT / "recipes" / "demo.yaml"
# thread settings a user's shell might carry; every case starts without them
CLEARED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY", "MIAM_THREAD_POLICY",
           "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def store_for(surveys: int) -> Path:
    """A demo-like store, synthesised and prepared once (reused while it exists)."""
    store = CACHE / f"threads-geoplant-{surveys}" / "store"
    if (store / "store.json").exists():
        return store
    from miam_cli.data.geoplant import GeoPlantOptions, plan_geoplant
    from miam_cli.data.prepare import run_prepare
    from miam_cli.synth.geoplant import synth_geoplant

    raw = store.parent / "raw"
    synth_geoplant(raw, surveys=surveys, species=16, seed=0)
    plan, decoder = plan_geoplant(raw, GeoPlantOptions())
    run_prepare(plan, decoder, store, overwrite=True)
    return store


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED and not k.startswith("SLURM_")}
    return {**env, **extra}


class Training:
    """One `miam train` process; `result()` waits and returns (wall s, per-step s, the threads line)."""

    def __init__(self, store: Path, out: Path, epochs: int, env: dict[str, str]):
        self.out = out
        cmd = [sys.executable, "-m", "miam_cli", "train", str(RECIPE), f"store={store}", f"train.epochs={epochs}", "--out", str(out)]
        self.start = time.monotonic()
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def result(self) -> tuple[float, float, str]:
        _, err = self.proc.communicate()
        wall = time.monotonic() - self.start
        if self.proc.returncode != 0:
            raise SystemExit(f"training in {self.out} failed ({self.proc.returncode}):\n{err[-2000:]}")
        rows = list(csv.DictReader(open(self.out / "metrics.csv")))
        seconds = sum(float(r["seconds"]) for r in rows)
        train_samples = round(float(rows[0]["samples_per_s"]) * float(rows[0]["seconds"]))
        batch = yaml.safe_load((self.out / "recipe.yaml").read_text())["train"]["batch_size"]
        steps = len(rows) * math.ceil(train_samples / batch)
        line = next((l for l in err.splitlines() if l.startswith("threads:")), "threads: torch's defaults (policy off)")
        return wall, seconds / steps, line


def run_together(store: Path, work: Path, name: str, epochs: int, envs: list[dict[str, str]]) -> tuple[float, list[float], list[str]]:
    """Start len(envs) trainings at once; (makespan, per-step times, threads lines)."""
    start = time.monotonic()
    runs = [Training(store, work / f"{name}-{i}", epochs, env) for i, env in enumerate(envs)]
    results = [r.result() for r in runs]
    return time.monotonic() - start, [r[1] for r in results], [r[2] for r in results]


def with_busy_loops(count: int, fn):
    """Run fn() while `count` CPU-bound Python loops spin beside it (ended by their process ids)."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5)  # let them reach the run queue
        return fn()
    finally:
        for p in loops:
            p.kill()
            p.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--surveys", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    from miam_cli.threads import available_cpus

    cpus = available_cpus()
    half = str(max(1, cpus // 2))
    store = store_for(args.surveys)
    load_before = os.getloadavg()
    print(f"{cpus} CPUs available; load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} (1/5/15 min) "
          f"before; demo recipe, {args.epochs} epochs, {args.surveys} surveys")
    policy, torch_default = clean_env(), clean_env(MIAM_THREAD_POLICY="off")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows["a"] = run_together(store, work, "a", args.epochs, [policy])
        rows["b"] = run_together(store, work, "b", args.epochs, [clean_env(SLURM_CPUS_PER_TASK=half)] * 2)
        rows["c"] = run_together(store, work, "c", args.epochs, [torch_default] * 2)
        rows["d policy"] = with_busy_loops(2, lambda: run_together(store, work, "dp", args.epochs, [policy]))
        rows["d torch"] = with_busy_loops(2, lambda: run_together(store, work, "dt", args.epochs, [torch_default]))
        rows["e"] = run_together(store, work, "e", args.epochs, [torch_default])
    load_after = os.getloadavg()

    print(f"\n{'case':<9} | {'wall s':>7} | {'ms/step':>15} | threads")
    labels = {"a": "one, policy", "b": "two, 1/2 CPUs each", "c": "two, torch defaults", "d policy": "one + 2 busy loops, policy",
              "d torch": "one + 2 busy loops, torch defaults", "e": "one, torch defaults"}
    for key, (wall, steps, lines) in rows.items():
        ms = " / ".join(f"{1000 * s:.0f}" for s in steps)
        print(f"{key:<9} | {wall:>7.1f} | {ms:>15} | {labels[key]}: {lines[0]}")
    a_wall, a_step = rows["a"][0], rows["a"][1][0]
    e_step = rows["e"][1][0]
    ratios = [
        ("(b) wall / two (a) in a row", rows["b"][0] / (2 * a_wall), 0.85),
        ("(c) wall / two (a) in a row", rows["c"][0] / (2 * a_wall), None),
        ("(b) wall / (c) wall", rows["b"][0] / rows["c"][0], None),
        ("(d) policy ms/step / (a) ms/step", rows["d policy"][1][0] / a_step, 3.0),
        ("(d) torch ms/step / (e) ms/step", rows["d torch"][1][0] / e_step, None),
        ("(d) policy ms/step / (d) torch ms/step", rows["d policy"][1][0] / rows["d torch"][1][0], None),
        ("(a) ms/step / (e) ms/step: the policy alone on an idle machine", a_step / e_step, None),
    ]
    print()
    for label, value, target in ratios:
        verdict = "" if target is None else f"  (target <= {target}: {'met' if value <= target else 'NOT met'})"
        print(f"{label:<62} {value:6.2f}{verdict}")
    print(f"\nload average {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} (1/5/15 min) after")


if __name__ == "__main__":
    main()
