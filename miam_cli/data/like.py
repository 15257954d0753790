"""`prepare ... --like STORE`: a store whose tokens and classes mean what they mean in a training store.

A model trained on STORE reads normalised tokens and predicts STORE's classes. A store prepared for
prediction (new places, another year's surveys) must therefore give every modality the same kind, axes
and feature size (else exit 2, each difference named), take STORE's normalisation statistics instead of
computing its own, and index labels by STORE's class list (labels of other classes are left out and
counted in `prepare-report.json`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from miam_cli.errors import UserError
from miam_cli.store.compat import check_same_modalities
from miam_cli.store.integrity import check_structure
from miam_cli.store.reader import TokenStore
from miam_cli.store.schema import LABELLED_SPLITS
from miam_cli.store.writer import StorePlan


def open_like(path: Path | str | None) -> TokenStore | None:
    if path is None:
        return None
    store = TokenStore(path)  # exit 2 when it is not a store
    # only its tables are read, but a damaged store (a missing chunk, a truncated table) is no model's
    # training store to copy statistics from: refused, naming the first bad file
    check_structure(store)
    return store


def adopt_like(plan: StorePlan, like: TokenStore) -> StorePlan:
    """The plan with `like`'s task, classes and normalisation; refused when its modalities differ."""
    check_same_modalities(like.meta.modalities, plan.modalities, f"--like {like.path}", "this dataset")
    if plan.task.type != like.meta.task.type:
        raise UserError(f"--like {like.path}: its task is {like.meta.task.type}, this dataset's labels make it {plan.task.type}")
    classes = like.classes[["class_index", "original_id", "name"]].copy()
    labels, lost = _remap_labels(plan.samples["labels"], plan.classes["original_id"].astype(str), classes["original_id"].astype(str))
    samples = plan.samples.assign(labels=labels)
    for split in LABELLED_SPLITS:
        hits = [lab for lab, s in zip(labels, samples["split"]) if s == split]
        classes[f"count_{split}"] = np.bincount(np.concatenate(hits) if hits else np.zeros(0, int), minlength=len(classes))
    dropped = {**plan.dropped, **({"label_outside_like_classes": lost} if lost else {})}
    return replace(
        plan, task=like.meta.task, classes=classes, samples=samples, dropped=dropped,
        normalization={m: like.meta.modalities[m].normalization for m in plan.modalities},
        provenance={**plan.provenance, "like": str(like.path.resolve())},
    )


def _remap_labels(labels: pd.Series, own_ids: pd.Series, like_ids: pd.Series) -> tuple[list[np.ndarray], int]:
    """Class indices of the plan -> indices in the like store's class list (classes it lacks are left out)."""
    position = {cid: i for i, cid in enumerate(like_ids)}
    new_index = np.array([position.get(cid, -1) for cid in own_ids], dtype=np.int64)
    out, lost = [], 0
    for lab in labels:
        mapped = new_index[np.asarray(lab, dtype=np.int64)]
        lost += int((mapped < 0).sum())
        out.append(np.sort(mapped[mapped >= 0]).astype(np.int32))
    return out, lost
