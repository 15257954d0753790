"""Paper-scale timings on CPU: prepare, one training epoch, eval-subsets and one attribution report on
a synthetic GeoPlant of --surveys surveys and --species species at the paper recipe's model size
(`recipes/geoplant.yaml`: d_model 256, 4 layers, batch 512), with wall time and peak memory, and
the same figures extrapolated to the paper's ~90k surveys and 1,783 species.

    python benchmarks/scale_bench.py [--surveys 20000] [--species 500] [--threads 2] [--workers 2]

Every stage runs as the `miam` command a user types (a subprocess, with `--threads`); its peak
memory is the largest sum of the resident memory of the process and its children (prepare's
workers), sampled every 0.2 s with psutil. The synthetic raw data and the store are kept under
build/bench-cache/ and reused: a second run times training, evaluation and attribution only (pass
--fresh to redo synth and prepare).

It also checks that the data path keeps up with training: samples/s that `StoreBatches` reads from
the store into batches (random batches of the recipe's size, the streamed path that large stores
take) against the samples/s the training epoch consumed.

Extrapolation: prepare, training and evaluation are linear in the number of surveys (every survey
is decoded, trained on and evaluated the same way); the classes add a head of d_model x C and a
per-class AUC, small beside the encoder (measured here: see the printout), so the factor is the
survey ratio, with the metric's share scaled by the class ratio too. Memory: a split is held in
memory when its estimate (`miam_cli.data.batch.estimated_bytes`) fits in 4 GB (`train.max_memory_gb`),
else streamed from the store; so a stage's peak at the paper's size is the peak measured here, less
the splits it held here, plus those it would hold there (a streamed split adds only its batches).
The model (~4M parameters) does not grow.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
PAPER_SURVEYS, PAPER_SPECIES = 90_000, 1_783


class PeakMemory:
    """Largest summed RSS of a process and its descendants, polled in a thread."""

    def __init__(self, pid: int, every: float = 0.2):
        self.peak, self._pid, self._every = 0, pid, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self._pid)
                procs = [root, *root.children(recursive=True)]
                self.peak = max(self.peak, sum(_rss(p) for p in procs))
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self._every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _rss(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss
    except psutil.NoSuchProcess:
        return 0


def miam(*args: str, threads: int) -> dict:
    """Run `miam ARGS --threads N`; wall seconds, peak memory and the last lines of its log."""
    cmd = [sys.executable, "-m", "miam_cli", *args, "--threads", str(threads)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = PeakMemory(proc.pid)
    out, err = proc.communicate()
    wall, rss = time.monotonic() - start, peak.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    print(f"  {' '.join(args[:2])}: {wall:.1f} s, peak {rss / 2**30:.2f} GiB", flush=True)
    return {"wall": wall, "peak": rss, "stdout": out, "stderr": err}


def data_path_rate(store: Path, batch: int, batches: int = 20) -> dict:
    """samples/s from the store into Batches: streamed from zarr (random rows), and the in-memory load."""
    import torch

    from miam_cli.data.batch import SplitTensors, StoreBatches
    from miam_cli.store.reader import TokenStore

    ts = TokenStore(store)
    stream = StoreBatches(ts, "train")
    order = torch.randperm(len(stream), generator=torch.Generator().manual_seed(0))
    start = time.monotonic()
    seen = 0
    for b in stream.batches(batch, order[: batch * batches]):
        seen += len(b)
    streamed = seen / (time.monotonic() - start)
    start = time.monotonic()
    memory = SplitTensors(ts, "train")
    load_s = time.monotonic() - start
    start = time.monotonic()
    for i in range(batches):
        memory.load(order[i * batch : (i + 1) * batch])
    in_memory = batch * batches / (time.monotonic() - start)
    return {"streamed": streamed, "in_memory": in_memory, "load_s": load_s, "train_samples": len(stream)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--surveys", type=int, default=20_000)
    parser.add_argument("--species", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--attribute", nargs="+", default=["--modality", "sentinel2", "--by", "band"],
                        help="the attribution report to time (exact: 4 bands, 16 coalitions, other modalities visible)")
    parser.add_argument("--fresh", action="store_true", help="redo synth and prepare")
    args = parser.parse_args()

    work = ROOT / "build" / "bench-cache" / f"scale-{args.surveys}-{args.species}"
    raw, store, run = work / "raw", work / "store", work / "run"
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)
    load = os.getloadavg()
    print(f"{args.surveys} surveys, {args.species} species; recipes/geoplant.yaml, 1 epoch; --threads {args.threads}, "
          f"prepare --workers {args.workers}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} before", flush=True)
    stages = {}
    if not (raw / "truth.json").exists():
        stages["synth"] = miam("synth", "geoplant", str(raw), "--surveys", str(args.surveys), "--species", str(args.species), threads=args.threads)
    if not (store / "store.json").exists():
        stages["prepare"] = miam("prepare", "geoplant", str(raw), str(store), "--workers", str(args.workers), threads=args.threads)
    stages["train"] = miam("train", str(ROOT / "recipes" / "geoplant.yaml"), f"store={store}", "train.epochs=1", "--out", str(run),
                           "--json", threads=args.threads)
    stages["eval-subsets"] = miam("eval-subsets", str(run), "--device", "cpu", "--json", threads=args.threads)
    stages["attribute"] = miam("attribute", str(run), *args.attribute, "--device", "cpu", "--json", threads=args.threads)

    metrics = json.loads(stages["train"]["stdout"])["metrics"]
    attribution = json.loads(stages["attribute"]["stdout"])
    store_meta = json.loads((store / "store.json").read_text())
    rates = data_path_rate(store, 512)
    trainer = float(metrics["samples_per_s"])

    scale = PAPER_SURVEYS / args.surveys
    n_test, n_val = store_meta["splits"].get("test", 0), store_meta["splits"].get("val", 0)
    metric_here, metric_paper = metric_seconds(n_test, args.species), metric_seconds(round(n_test * scale), PAPER_SPECIES)
    # metric evaluations per stage: the epoch's validation (all + one per modality group), 2^3 - 1 subsets, the report's coalitions
    metric_calls = {"train": 4 * n_val / max(n_test, 1), "eval-subsets": 7, "attribute": attribution["evaluations"]}
    print(f"\nstore: {store_meta['num_samples']} samples, splits {store_meta['splits']}, {store_meta['task']['num_classes']} classes; "
          f"{_du(store) / 2**30:.2f} GiB on disk")
    print(f"training epoch: {float(metrics['seconds']):.0f} s of steps, {trainer:.1f} samples/s; "
          f"attribution: {attribution['method']}, {attribution['evaluations']} coalition evaluations, "
          f"{attribution['meta'].get('seconds', float('nan')):.0f} s inside the command")
    print(f"macro AUC of one prediction table: {metric_here:.2f} s at {n_test} x {args.species}, "
          f"{metric_paper:.2f} s at {round(n_test * scale)} x {PAPER_SPECIES}")
    print(f"data path: store -> batch {rates['streamed']:.0f} samples/s streamed from zarr (random rows), "
          f"{rates['in_memory']:.0f} samples/s from memory after a {rates['load_s']:.1f} s load of the train split; "
          f"the trainer consumes {trainer:.1f} samples/s: streamed / consumed = {rates['streamed'] / trainer:.1f}x "
          f"({'keeps up' if rates['streamed'] > trainer else 'DOES NOT keep up'})")
    sizes_here, sizes_paper = split_bytes(store, 1.0), split_bytes(store, scale)
    print(f"\n{'stage':<13} | {'wall s':>8} | {'peak GiB':>8} | at ~{PAPER_SURVEYS:,} surveys, {PAPER_SPECIES:,} species")
    for name, s in stages.items():
        extra = metric_calls.get(name, 0) * (metric_paper - scale * metric_here)  # the classes' share of the metric
        wall = s["wall"] * scale + max(0.0, extra)
        splits = STAGE_SPLITS.get(name, ())
        memory = s["peak"] + held_bytes(sizes_paper, splits) - held_bytes(sizes_here, splits)
        print(f"{name:<13} | {s['wall']:>8.0f} | {s['peak'] / 2**30:>8.2f} | {_hms(wall):>8}, {memory / 2**30:5.1f} GiB")
    print(f"\nextrapolation: wall x {scale:.1f} (every survey is decoded, trained on and evaluated alike) plus the metric's "
          f"growth with the classes (measured above); memory: the splits a stage holds in memory (<= 4 GB each, else "
          f"streamed) swapped for those at the paper's size ({held_note(sizes_paper)}); prepare's stays flat (it writes "
          f"chunk by chunk). Load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} after")


STAGE_SPLITS = {"train": ("train", "val"), "eval-subsets": ("test",), "attribute": ("test",)}
HOLD_LIMIT = 4 << 30  # train.max_memory_gb's default, and LoadedRun.split's


def split_bytes(store: Path, scale: float) -> dict[str, float]:
    """Each split's in-memory size at `scale` times this store's surveys, by the estimate `load_split`
    itself uses to decide between holding and streaming (`miam_cli.data.batch.estimated_bytes`)."""
    from miam_cli.data.batch import estimated_bytes
    from miam_cli.store.reader import TokenStore

    ts = TokenStore(store)
    return {split: estimated_bytes(ts, split) * scale for split in ("train", "val", "test")}


def held_bytes(sizes: dict[str, float], splits) -> float:
    """Bytes of the `splits` held in memory (each within HOLD_LIMIT; a larger one is streamed)."""
    return sum(sizes[split] for split in splits if sizes[split] <= HOLD_LIMIT)


def held_note(sizes: dict[str, float]) -> str:
    return "at the paper's size " + ", ".join(
        f"{split} {b / 2**30:.1f} GiB: {'held' if b <= HOLD_LIMIT else 'streamed'}" for split, b in sizes.items())


def metric_seconds(n: int, classes: int) -> float:
    """Seconds for the primary metric (macro AUC) of one [n, classes] prediction table, ~5% positives."""
    import numpy as np

    from miam_cli.scoring.metrics import primary_value

    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(n, classes)).astype(np.float32), rng.random((n, classes)) < 0.05
    start = time.monotonic()
    primary_value("multilabel", labels, scores)
    return time.monotonic() - start


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _hms(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


if __name__ == "__main__":
    main()
