"""Wall time of evaluating all 7 subsets of a 3-modality model / the time of 7 full-input passes.

    python benchmarks/eval_bench.py [--samples 2000]

Invisible tokens are dropped, so small subsets cost less than the full input (target ratio <= 0.6).
Uses a GeoPlant-like token layout (tabular 58x1, sentinel2 64x256, landsat 21x24 + bioclim 19x48 as
one `timeseries` modality) and an untrained model: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import time

import torch

from miam_cli.data.batch import Batch, SplitTensors
from miam_cli.evaluate.predict import group_visibility, predict
from miam_cli.evaluate.selectors import all_subsets
from miam_cli.model.layout import ModalityLayout, TokenLayout
from miam_cli.model.transformer import MiamModel


class _Split(SplitTensors):
    """The in-memory split the CLI uses, built from tensors instead of a store."""

    def __init__(self, batch: Batch):
        self.full = batch
        self.indices = batch.index.numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    mods = (ModalityLayout("tabular", "tabular", 58, 1, {"variable": [f"v{i}" for i in range(58)]}, 0),
            ModalityLayout("sentinel2", "image", 64, 256, {"band": list("rgbn"), "patch": [f"p{i}" for i in range(16)]}, 1),
            ModalityLayout("landsat", "timeseries", 21, 24, {"year": list(range(2000, 2021))}, 2),
            ModalityLayout("bioclim", "timeseries", 19, 48, {"year": list(range(2000, 2019))}, 2))
    layout = TokenLayout(mods, ("tabular", "sentinel2", "timeseries"))
    model = MiamModel(layout, 100, d_model=64, depth=2).eval()
    n = args.samples
    batch = Batch({m.name: torch.randn(n, m.tokens, m.features) for m in mods},
                  {m.name: torch.ones(n, m.tokens, dtype=torch.bool) for m in mods}, torch.zeros(n, 100), torch.arange(n))
    data = _Split(batch)
    subsets = all_subsets(list(layout.group_names))
    predict(model, data, None, 512)  # warm-up
    best_sub, best_full = float("inf"), float("inf")
    for _ in range(args.repeats):
        t = time.perf_counter()
        for s in subsets:
            predict(model, data, group_visibility(layout, list(s)), 512)
        best_sub = min(best_sub, time.perf_counter() - t)
        t = time.perf_counter()
        for _ in subsets:
            predict(model, data, None, 512)
        best_full = min(best_full, time.perf_counter() - t)
    print(f"{len(subsets)} subsets of {len(layout.group_names)} modalities, {n} samples, {layout.total_tokens} tokens at full input")
    print(f"all subsets: {best_sub:.2f}s   7 full-input passes: {best_full:.2f}s   ratio {best_sub / best_full:.2f} (target <= 0.6)")


if __name__ == "__main__":
    main()
