"""Prepare throughput and peak memory at two dataset sizes (one 4x the other), measured in one run.

    python benchmarks/prepare_bench.py [--small 500] [--workers 0]

Each size is prepared in a fresh subprocess so that its peak RSS (ru_maxrss) is its own.
Peak memory must not grow with the number of surveys: the ratio of peaks should stay near 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from miam_cli.data.geoplant import GeoPlantOptions, plan_geoplant
from miam_cli.data.prepare import run_prepare
raw, store, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
start = time.perf_counter()
plan, decoder = plan_geoplant(raw, GeoPlantOptions())
run_prepare(plan, decoder, store, workers=workers)
seconds = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"surveys": len(plan.samples), "seconds": seconds, "peak_mb": peak_kb / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=500)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    from miam_cli.synth.geoplant import synth_geoplant

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.small, 4 * args.small):
            raw = Path(tmp) / f"raw{n}"
            synth_geoplant(raw, surveys=n, species=16, seed=0)
            out = subprocess.run([sys.executable, "-c", CHILD, str(raw), str(Path(tmp) / f"store{n}"), str(args.workers)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'surveys':>8} {'seconds':>8} {'surveys/s':>10} {'peak MB':>8}")
    for r in rows:
        print(f"{r['surveys']:>8} {r['seconds']:>8.1f} {r['surveys'] / r['seconds']:>10.1f} {r['peak_mb']:>8.0f}")
    print(f"size ratio {rows[1]['surveys'] / rows[0]['surveys']:.1f}x -> peak memory ratio {rows[1]['peak_mb'] / rows[0]['peak_mb']:.2f}x, "
          f"throughput ratio {(rows[1]['surveys'] / rows[1]['seconds']) / (rows[0]['surveys'] / rows[0]['seconds']):.2f}x (workers={args.workers})")


if __name__ == "__main__":
    main()
