"""Spatial block split: test surveys are not neighbours of training surveys.

Points are binned into blocks (`block_size` degrees square, or `width` x `height` in any units);
blocks, never points, are handed to train, val and test. Two ways to hand them out:

- in a seeded random order, each block to the first split whose share its start does not exceed;
- label-aware (when labels are given): blocks, largest first (seeded order among equals), each to
  the split where it brings the split's size and label counts closest to their targets (the
  split's fraction of the total, per class). So a split's positive rate (one class) or class
  coverage (many) stays close to the overall one, while blocks stay whole. This is the greedy
  assignment of stratified group k-fold, with unequal fractions and multi-label counts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def block_of_points(x: np.ndarray, y: np.ndarray, width: float, height: float | None = None) -> np.ndarray:
    """Block index (0..B-1) of every point in a grid of `width` x `height` cells."""
    height = width if height is None else height
    bx = np.floor(np.nan_to_num(np.asarray(x, float)) / width).astype(np.int64)
    by = np.floor(np.nan_to_num(np.asarray(y, float)) / height).astype(np.int64)
    _, block = np.unique(np.stack([bx, by], 1), axis=0, return_inverse=True)
    return block.reshape(-1)


def spatial_block_split(
    lon: np.ndarray, lat: np.ndarray, block_size: float = 0.5, fractions=(0.7, 0.15, 0.15), seed: int = 0
) -> np.ndarray:
    return assign_blocks(block_of_points(lon, lat, block_size), fractions, seed)


def assign_blocks(block: np.ndarray, fractions=(0.7, 0.15, 0.15), seed: int = 0,
                  labels: Sequence[np.ndarray] | None = None, num_classes: int = 0) -> np.ndarray:
    """train/val/test per point, whole blocks at a time; label-aware when `labels` (class indices
    per point) are given."""
    block = np.asarray(block, np.int64)
    sizes = np.bincount(block) if len(block) else np.zeros(0, np.int64)
    order = np.random.default_rng(seed).permutation(len(sizes))
    if labels is None:
        split_of_block = _in_random_order(sizes, order, fractions)
    else:
        split_of_block = _label_aware(block, sizes, order, fractions, labels, num_classes)
    return np.asarray(SPLITS, dtype=object)[split_of_block][block].astype(str)


def _in_random_order(sizes: np.ndarray, order: np.ndarray, fractions) -> np.ndarray:
    bounds = np.cumsum(fractions) / np.sum(fractions) * sizes.sum()
    split_of_block = np.empty(len(sizes), np.int64)
    filled = 0
    for b in order:
        # a block goes to the first split whose quota its start does not exceed
        split_of_block[b] = min(int(np.searchsorted(bounds, filled, side="right")), len(SPLITS) - 1)
        filled += sizes[b]
    return split_of_block


def _block_label_counts(block: np.ndarray, labels: Sequence[np.ndarray], n_blocks: int):
    """Per block, the classes it holds and how many of its points carry each (sparse: memory grows
    with the labels, not blocks x classes)."""
    lengths = np.fromiter((len(lab) for lab in labels), np.int64, len(labels))
    classes = np.concatenate([np.asarray(lab, np.int64) for lab in labels]) if lengths.sum() else np.zeros(0, np.int64)
    pairs = pd.DataFrame({"block": np.repeat(block, lengths), "cls": classes}).value_counts().sort_index()
    blocks = pairs.index.get_level_values("block").to_numpy()
    starts = np.searchsorted(blocks, np.arange(n_blocks + 1))
    cls, cnt = pairs.index.get_level_values("cls").to_numpy(), pairs.to_numpy(float)
    return [(cls[starts[b]:starts[b + 1]], cnt[starts[b]:starts[b + 1]]) for b in range(n_blocks)]


def _label_aware(block, sizes, order, fractions, labels, num_classes) -> np.ndarray:
    share = np.asarray(fractions, float) / np.sum(fractions)
    per_block = _block_label_counts(block, labels, len(sizes))
    totals = np.zeros(max(num_classes, 1))
    for cls, cnt in per_block:
        np.add.at(totals, cls, cnt)
    target_n = share * sizes.sum()  # [S]
    target_l = share[:, None] * totals[None, :]  # [S, C]
    scale_n = np.maximum(target_n, 1.0)
    scale_l = np.maximum(target_l, 1.0)
    n = np.zeros(len(share))
    counts = np.zeros_like(target_l)
    split_of_block = np.zeros(len(sizes), np.int64)
    live = share > 0  # a split with fraction 0 gets nothing
    # largest blocks first, the seeded order among blocks of one size
    for b in order[np.argsort(-sizes[order], kind="stable")]:
        cls, cnt = per_block[b]
        # increase of the chi-square-like cost sum (x - target)^2 / scale when adding the block
        delta = (2 * sizes[b] * (n - target_n) + sizes[b] ** 2) / scale_n
        delta = delta + ((2 * cnt * (counts[:, cls] - target_l[:, cls]) + cnt**2) / scale_l[:, cls]).sum(axis=1)
        s = int(np.argmin(np.where(live, delta, np.inf)))
        split_of_block[b] = s
        n[s] += sizes[b]
        counts[s, cls] += cnt
    return split_of_block


def split_from_data(subset: pd.Series, lon, lat, block_size: float, val_fraction: float = 0.15, seed: int = 0) -> np.ndarray:
    """Keep the data's own train/test column; carve val out of train by spatial blocks."""
    subset = subset.astype(str).str.lower().to_numpy()
    out = np.where(subset == "test", "test", "train").astype(object)
    train = np.flatnonzero(out == "train")
    if len(train):
        inner = spatial_block_split(np.asarray(lon)[train], np.asarray(lat)[train], block_size, (1 - val_fraction, val_fraction, 0.0), seed)
        out[train] = inner
    return out.astype(str)
