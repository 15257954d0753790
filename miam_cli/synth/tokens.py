"""A small token store written directly (no raw files), for fast tests of the model-side stages.

Planted truth: tabular variable `v0` drives most of the signal (easy), the image modality's `red`
and `nir` bands carry a second signal (green/blue are noise), and one year of the time series
(`event_year`) carries a third. The classes respond to different mixtures of the three.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from miam_cli.data.prepare import run_prepare
from miam_cli.data.split import spatial_block_split
from miam_cli.store.schema import ModalitySpec, TaskSpec
from miam_cli.store.writer import ChunkData, StorePlan

EVENT_YEAR = 2003


def make_token_store(path: Path, n: int = 400, classes: int = 6, seed: int = 0, task: str = "multilabel",
                     missing_rate: float = 0.1) -> Path:
    rng = np.random.default_rng(seed)
    env, veg, event = rng.normal(size=(3, n))
    tab = np.stack([env + 0.1 * rng.normal(size=n)] + [rng.normal(size=n) for _ in range(4)], 1)[:, :, None]
    img = rng.normal(size=(n, 4, 4, 4))  # band x patch x features
    img[:, 0] += veg[:, None, None]  # red
    img[:, 3] += 2 * veg[:, None, None]  # nir
    ts = rng.normal(size=(n, 6, 3))
    ts[:, EVENT_YEAR - 2000] += 2 * event[:, None]
    weights = rng.normal(size=(3, classes)) * np.array([[2.5], [1.5], [1.5]])
    logits = np.stack([env, veg, event], 1) @ weights
    if task == "multilabel":
        labels = [np.flatnonzero(row > 0.5).astype(np.int32) for row in logits]
    else:
        labels = [np.array([int(np.argmax(row))], dtype=np.int32) for row in logits]
    lon, lat = rng.uniform(0, 10, n), rng.uniform(40, 50, n)
    valid_img = rng.random(n) > missing_rate
    samples = pd.DataFrame({"sample_id": [f"s{i:05d}" for i in range(n)], "split": spatial_block_split(lon, lat, 1.0, seed=seed),
                            "lon": lon, "lat": lat, "labels": labels})
    classes_df = pd.DataFrame({"class_index": range(classes), "original_id": [str(100 + k) for k in range(classes)],
                               "name": [f"species {k}" for k in range(classes)]})
    specs = {
        "tabular": ModalitySpec(kind="tabular", tokens=5, features=1, axes={"variable": [f"v{i}" for i in range(5)]}),
        "image": ModalitySpec(kind="image", tokens=16, features=4, axes={"band": ["red", "green", "blue", "nir"],
                              "patch": ["r0c0", "r0c1", "r1c0", "r1c1"]}, grid=[2, 2]),
        "series": ModalitySpec(kind="timeseries", tokens=6, features=3, axes={"year": list(range(2000, 2006))}),
    }
    plan = StorePlan(
        dataset="tiny", task=TaskSpec(type=task, num_classes=classes, metric="macro_auc" if task == "multilabel" else "top1"),
        modalities=specs, samples=samples, classes=classes_df, provenance={"generator": "miam_cli.synth.tokens", "seed": seed},
        normalization_scope={"tabular": "token", "image": "token", "series": "feature"},
    )
    arrays = {"tabular": tab, "image": img.reshape(n, 16, 4), "series": ts}
    valid = {"tabular": np.ones((n, 5), bool), "image": np.repeat(valid_img[:, None], 16, 1), "series": np.ones((n, 6), bool)}

    def decode(rows: range) -> ChunkData:
        sl = slice(rows.start, rows.stop)
        return ChunkData({m: a[sl] for m, a in arrays.items()}, {m: v[sl] for m, v in valid.items()})

    run_prepare(plan, decode, Path(path), chunk_size=128, overwrite=True)
    return Path(path)
