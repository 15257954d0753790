"""`miam map` throughput and peak memory at two map sizes (one 4x the other's pixels), measured in one run.

    python benchmarks/map_bench.py [--resolution 0.01] [--tile 128] [--contributions]

A run is trained once on the synthetic landscape (climate raster values + 8 x 8 px Sentinel-2 windows);
each map then runs in a fresh subprocess so that its peak RSS (ru_maxrss) is its own: the second map
halves the resolution over the same region (4x the pixels, the same tile size). Memory must stay flat
(tiles, not the map, are held): the ratio of peaks should stay within 1.2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from miam_cli import api
run, spec, out, tile, contributions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
res = api.predict_map(api.load_run(run, device="cpu"), spec, out=out, tile=tile, contributions=contributions)
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"pixels": res.width * res.height, "tiles": res.tiles, "seconds": res.seconds, "peak_mb": peak_kb / 1024,
                  "bands": len(res.bands)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=float, default=0.01, help="the small map's pixel size (deg); the large one's is half")
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--contributions", action="store_true")
    args = ap.parse_args()
    from miam_cli.data.custom import load_spec, plan_custom
    from miam_cli.data.prepare import run_prepare
    from miam_cli.recipe import validate_recipe
    from miam_cli.engine.train import train
    from miam_cli.synth.landscape import REGION, synth_landscape

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        land = tmp / "landscape"
        synth_landscape(land, points=1500, seed=0)
        plan, decoder = plan_custom(load_spec(land / "spec.yaml"), land / "spec.yaml")
        run_prepare(plan, decoder, tmp / "store")
        recipe = validate_recipe({"store": str(tmp / "store"), "model": {"d_model": 32}, "train": {"epochs": 2, "batch_size": 128}})
        run = train(recipe, out=tmp / "run", log=lambda *_: None).run_dir
        for res in (args.resolution, args.resolution / 2):
            spec = tmp / f"map-{res}.yaml"
            spec.write_text(yaml.safe_dump({"dataset": str(land / "spec.yaml"), "allow_outside_root": True,  # the spec lies in tmp
                                            "grid": {"bbox": list(REGION), "resolution": res, "crs": "EPSG:4326"}}))
            out = subprocess.run([sys.executable, "-c", CHILD, str(run), str(spec), str(tmp / f"map-{res}.tif"), str(args.tile),
                                  "1" if args.contributions else "0"], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'pixels':>8} {'tiles':>6} {'seconds':>8} {'pixels/s':>9} {'peak MB':>8}   (tile {args.tile} px, "
          f"{'with' if args.contributions else 'without'} contributions, {rows[0]['bands']} bands)")
    for r in rows:
        print(f"{r['pixels']:>8} {r['tiles']:>6} {r['seconds']:>8.1f} {r['pixels'] / r['seconds']:>9.0f} {r['peak_mb']:>8.0f}")
    print(f"size ratio {rows[1]['pixels'] / rows[0]['pixels']:.1f}x -> peak memory ratio {rows[1]['peak_mb'] / rows[0]['peak_mb']:.2f}x, "
          f"throughput ratio {(rows[1]['pixels'] / rows[1]['seconds']) / (rows[0]['pixels'] / rows[0]['seconds']):.2f}x")


if __name__ == "__main__":
    main()
