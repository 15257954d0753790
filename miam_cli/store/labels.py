"""Label counts per split: what `store info` and `prepare-report.json` show, so that a split whose
positive rate or class coverage differs from the others is seen before training."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from miam_cli.store.schema import LABELLED_SPLITS


def split_label_counts(labels: Sequence[np.ndarray], split: Sequence[str], num_classes: int) -> dict:
    """Per labelled split and overall ("all", the labelled splits together): samples, positives
    (sample-class pairs), positive rate (positives / (samples x classes): the prevalence when there
    is one class) and classes present. Unlabelled samples (the predict split) are counted nowhere:
    their empty label is not an absence."""
    split = np.asarray(split).astype(str)
    lengths = np.fromiter((len(lab) for lab in labels), np.int64, len(labels))
    classes = np.concatenate([np.asarray(lab, np.int64) for lab in labels]) if lengths.sum() else np.zeros(0, np.int64)
    split_of_label = np.repeat(split, lengths)
    out = {}
    for name in (*LABELLED_SPLITS, "all"):
        rows = np.isin(split, LABELLED_SPLITS) if name == "all" else split == name
        mine = classes[np.isin(split_of_label, LABELLED_SPLITS)] if name == "all" else classes[split_of_label == name]
        n = int(rows.sum())
        out[name] = {
            "samples": n,
            "positives": int(len(mine)),
            "positive_rate": float(len(mine) / (n * num_classes)) if n and num_classes else None,
            "classes_present": int(len(np.unique(mine))),
        }
    return out
