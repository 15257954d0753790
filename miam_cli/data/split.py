"""Spatial block split: test surveys are not neighbours of training surveys.

Points are binned into square blocks of `block_size` degrees; blocks (not points) are shuffled with a
fixed seed and handed to train, then val, then test until each split has its share of points.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def spatial_block_split(
    lon: np.ndarray, lat: np.ndarray, block_size: float = 0.5, fractions=(0.7, 0.15, 0.15), seed: int = 0
) -> np.ndarray:
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    bx = np.floor(np.nan_to_num(lon) / block_size).astype(np.int64)
    by = np.floor(np.nan_to_num(lat) / block_size).astype(np.int64)
    blocks, block_of_point = np.unique(np.stack([bx, by], 1), axis=0, return_inverse=True)
    block_of_point = block_of_point.reshape(-1)
    sizes = np.bincount(block_of_point, minlength=len(blocks))
    order = np.random.default_rng(seed).permutation(len(blocks))
    bounds = np.cumsum(fractions) / np.sum(fractions) * len(lon)
    split_of_block = np.empty(len(blocks), dtype=object)
    filled = 0
    for b in order:
        # a block goes to the first split whose quota its start does not exceed
        k = int(np.searchsorted(bounds, filled, side="right"))
        split_of_block[b] = SPLITS[min(k, len(SPLITS) - 1)]
        filled += sizes[b]
    return split_of_block[block_of_point].astype(str)


def split_from_data(subset: pd.Series, lon, lat, block_size: float, val_fraction: float = 0.15, seed: int = 0) -> np.ndarray:
    """Keep the data's own train/test column; carve val out of train by spatial blocks."""
    subset = subset.astype(str).str.lower().to_numpy()
    out = np.where(subset == "test", "test", "train").astype(object)
    train = np.flatnonzero(out == "train")
    if len(train):
        inner = spatial_block_split(np.asarray(lon)[train], np.asarray(lat)[train], block_size, (1 - val_fraction, val_fraction, 0.0), seed)
        out[train] = inner
    return out.astype(str)
