"""The one format between data and model (`Batch`), and the two ways a split of a token store becomes
batches: held in memory (`SplitTensors`) or streamed from zarr (`StoreBatches`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from miam_cli.store.reader import TokenStore


@dataclass
class Batch:
    values: dict[str, torch.Tensor]  # modality -> [B, T, F] float32, normalised, invalid tokens = 0
    valid: dict[str, torch.Tensor]  # modality -> [B, T] bool
    target: torch.Tensor  # [B, C] float32 multi-hot, or [B] int64
    index: torch.Tensor  # [B] int64 sample indices in the store

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @classmethod
    def from_store(cls, store: TokenStore, indices, modalities: list[str] | None = None) -> "Batch":
        idx = np.asarray(indices, dtype=np.int64)
        values, valid = {}, {}
        for m in modalities or store.modalities:
            v, ok = store.read(m, idx)
            values[m], valid[m] = torch.from_numpy(v), torch.from_numpy(ok)
        return cls(values, valid, torch.from_numpy(store.targets(idx)), torch.from_numpy(idx))

    def select(self, rows) -> "Batch":
        if isinstance(rows, slice):  # a view, no copy: evaluation walks the split in order
            return Batch({m: v[rows] for m, v in self.values.items()}, {m: v[rows] for m, v in self.valid.items()},
                         self.target[rows], self.index[rows])
        rows = torch.as_tensor(rows, dtype=torch.long)
        return Batch(
            {m: v[rows] for m, v in self.values.items()},
            {m: v[rows] for m, v in self.valid.items()},
            self.target[rows],
            self.index[rows],
        )

    def to(self, device) -> "Batch":
        return Batch(
            {m: v.to(device, non_blocking=True) for m, v in self.values.items()},
            {m: v.to(device, non_blocking=True) for m, v in self.valid.items()},
            self.target.to(device, non_blocking=True),
            self.index.to(device, non_blocking=True),
        )


class SplitTensors:
    """A whole split held in memory as tensors: the fast path when it fits (most CPU runs).

    Larger stores go through `StoreBatches`, which reads one batch at a time from zarr.
    """

    def __init__(self, store: TokenStore, split: str, modalities: list[str] | None = None):
        self.indices = store.split_indices(split)
        self.full = Batch.from_store(store, self.indices, modalities)

    @classmethod
    def of(cls, batch: Batch) -> "SplitTensors":
        """Samples that are not in a store (a map's pixels) behind the same interface."""
        data = cls.__new__(cls)
        data.indices, data.full = batch.index.numpy(), batch
        return data

    def __len__(self) -> int:
        return len(self.full)

    def load(self, rows: torch.Tensor) -> Batch:
        """The samples at split positions `rows`."""
        return self.full.select(rows)

    def valid(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Validity {m: [n, T]} of the samples at split positions `rows`."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        return {m: v[rows] for m, v in self.full.valid.items()}

    def batches(self, batch_size: int, order: torch.Tensor | None = None):
        if order is None:
            for start in range(0, len(self), batch_size):
                yield self.full.select(slice(start, start + batch_size))
            return
        for start in range(0, len(order), batch_size):
            yield self.load(order[start : start + batch_size])


class StoreBatches:
    """A split read from zarr one batch at a time: memory stays flat whatever the store's size."""

    def __init__(self, store: TokenStore, split: str, modalities: list[str] | None = None):
        self.store, self.modalities = store, modalities
        self.indices = store.split_indices(split)

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, rows: torch.Tensor) -> Batch:
        """The samples at split positions `rows`, read from zarr."""
        return Batch.from_store(self.store, self.indices[np.asarray(rows, dtype=np.int64)], self.modalities)

    def valid(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Validity {m: [n, T]} of the samples at split positions `rows`, without reading their values:
        under DDP every rank needs the whole global batch's validity to draw its masks, but only its
        own slice's values."""
        idx = self.indices[np.asarray(rows, dtype=np.int64)]
        return {m: torch.from_numpy(self.store.read_valid(m, idx)) for m in self.modalities or self.store.modalities}

    def batches(self, batch_size: int, order: torch.Tensor | None = None):
        order = torch.arange(len(self)) if order is None else order
        for start in range(0, len(order), batch_size):
            yield self.load(order[start : start + batch_size])


def load_split(store: TokenStore, split: str, modalities: list[str] | None = None, max_bytes: int = 4 << 30):
    """In memory when the split fits in `max_bytes`, else streamed from the store."""
    if estimated_bytes(store, split, modalities) <= max_bytes:
        return SplitTensors(store, split, modalities)
    return StoreBatches(store, split, modalities)


def estimated_bytes(store: TokenStore, split: str, modalities: list[str] | None = None) -> int:
    n = int(store.meta.splits.get(split, 0))
    specs = [store.meta.modalities[m] for m in (modalities or store.modalities)]
    return n * sum(s.tokens * (s.features * 4 + 1) for s in specs)
