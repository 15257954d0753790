"""Writing a token store: resumable, shardable, atomic.

The plan (samples table, class table, modality specs) is fixed first and is the same in every shard.
Rows are written chunk by chunk (one zarr chunk along N at a time); a chunk is done when its marker
file `_progress/chunk-XXXXXX.json` exists, so an interrupted prepare redoes at most the chunk it was
in. Shard i of n owns chunks c with c % n == i, so two shards never write the same chunk.
`finalize()` runs once all chunks are done: it gathers the faults into `prepare-report.json`,
computes normalisation statistics from the train split, and writes `store.json` last: a store is
complete exactly when `store.json` exists.

Every chunk carries a crc32c checksum and is written even when it holds only zeros (zarr skips such
chunks by default, and a reader could then not tell a deleted chunk from an empty one); the tables
carry Parquet page checksums and their SHA-256 in `store.json` (see `miam_cli.store.integrity`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from miam_cli import __version__
from miam_cli.errors import UserError
from miam_cli.files import writable_folder
from miam_cli.shards import Shard, owned
from miam_cli.store.atomic import atomic_write, atomic_write_json
from miam_cli.store.integrity import DIGESTED_FILES, file_digest
from miam_cli.store.labels import split_label_counts
from miam_cli.store.schema import FORMAT_VERSION, LABELLED_SPLITS, PREDICT_SPLIT, ModalitySpec, Normalization, StoreMeta, TaskSpec

PROGRESS_DIR = "_progress"


@dataclass
class ChunkData:
    """What an adapter produced for one chunk of rows: per modality raw values and validity."""

    values: dict[str, np.ndarray]  # modality -> [n, T, F]
    valid: dict[str, np.ndarray]  # modality -> [n, T] bool
    faults: list[dict] = field(default_factory=list)


@dataclass
class StorePlan:
    dataset: str
    task: TaskSpec
    modalities: dict[str, ModalitySpec]
    samples: pd.DataFrame  # sample_id, split, lon, lat, labels
    classes: pd.DataFrame  # class_index, original_id, name
    provenance: dict = field(default_factory=dict)
    split_info: dict = field(default_factory=dict)
    dropped: dict = field(default_factory=dict)  # reason -> count of raw records left out
    normalization_scope: dict[str, str] = field(default_factory=dict)  # modality -> token|feature|none
    warnings: list[str] = field(default_factory=list)  # said to the user before preparing (e.g. a likely wrong label kind)
    # fixed statistics (`prepare ... --like STORE`): the tokens then mean what they meant in that store
    normalization: dict[str, Normalization] | None = None

    def fingerprint(self) -> str:
        """Identifies the plan, so that a resume into a store prepared differently is refused."""
        h = hashlib.sha256()
        h.update(pd.util.hash_pandas_object(self.samples[["sample_id", "split"]], index=False).values.tobytes())
        h.update(json.dumps({m: s.model_dump() for m, s in self.modalities.items()}, sort_keys=True).encode())
        h.update(json.dumps(self.task.model_dump(), sort_keys=True).encode())
        return h.hexdigest()[:16]


class StoreWriter:
    def __init__(self, path: Path, plan: StorePlan, chunk_size: int = 256):
        self.path = Path(path)
        self.plan = plan
        self.chunk_size = chunk_size
        self.n = len(plan.samples)

    # ---------- set-up ----------
    def begin(self, overwrite: bool = False) -> None:
        writable_folder(self.path, "store")
        if (self.path / "store.json").exists():
            if not overwrite:
                raise UserError(f"{self.path} is already a complete token store; pass --overwrite to rebuild it")
            shutil.rmtree(self.path)
        plan_file = self.path / PROGRESS_DIR / "plan.json"
        fingerprint = self.plan.fingerprint()
        if plan_file.exists():
            old = json.loads(plan_file.read_text())
            if old.get("fingerprint") != fingerprint or old.get("chunk_size") != self.chunk_size:
                raise UserError(
                    f"{self.path} holds an unfinished prepare with different data or settings; "
                    "remove it or pass --overwrite"
                )
            if old.get("version", 1) != FORMAT_VERSION:
                raise UserError(f"{self.path} holds an unfinished prepare from an older miam (store format "
                                f"{old.get('version', 1)}); pass --overwrite to start it again")
        else:
            atomic_write_json(plan_file, {"fingerprint": fingerprint, "chunk_size": self.chunk_size, "version": FORMAT_VERSION})
        self._write_tables()
        self._create_arrays()

    def _write_tables(self) -> None:
        for name, df in (("samples.parquet", self.plan.samples), ("classes.parquet", self.plan.classes)):
            atomic_write(self.path / name, lambda p, df=df: write_parquet(df, p))

    def _create_arrays(self) -> None:
        root = zarr.open_group(self.path / "tokens.zarr", mode="a")
        for m, spec in self.plan.modalities.items():
            group = root.require_group(m)
            shapes = {"values": (self.n, spec.tokens, spec.features), "valid": (self.n, spec.tokens)}
            dtypes = {"values": spec.dtype, "valid": "bool"}
            for key, shape in shapes.items():
                if key in group:
                    if tuple(group[key].shape) != shape:
                        raise UserError(f"{self.path}/tokens.zarr/{m}/{key} has shape {group[key].shape}, expected {shape}")
                    continue
                chunks = (self.chunk_size,) + shape[1:]
                try:
                    group.create_array(key, shape=shape, chunks=chunks, dtype=dtypes[key], fill_value=0,
                                       compressors=[ZstdCodec(level=0), Crc32cCodec()])
                except Exception:
                    # two shards starting together: the other one created it first, with the same plan
                    if key not in zarr.open_group(self.path / "tokens.zarr" / m, mode="r"):
                        raise

    # ---------- chunks ----------
    @property
    def num_chunks(self) -> int:
        return (self.n + self.chunk_size - 1) // self.chunk_size

    def chunk_rows(self, chunk: int) -> range:
        return range(chunk * self.chunk_size, min(self.n, (chunk + 1) * self.chunk_size))

    def _marker(self, chunk: int) -> Path:
        return self.path / PROGRESS_DIR / f"chunk-{chunk:06d}.json"

    def pending_chunks(self, shard: Shard = (0, 1)) -> list[int]:
        return [c for c in owned(self.num_chunks, shard) if not self._marker(c).exists()]

    def all_done(self) -> bool:
        return all(self._marker(c).exists() for c in range(self.num_chunks))

    def faults_so_far(self) -> int:
        """Faults of every chunk written so far, by this run or the interrupted runs it resumes."""
        done = [c for c in range(self.num_chunks) if self._marker(c).exists()]
        return sum(len(json.loads(self._marker(c).read_text())["faults"]) for c in done)

    @contextmanager
    def shard_lock(self, shard: Shard):
        """Hold `_progress/shard-I-of-N.lock` while this shard runs: a second prepare of the same shard
        into the same store is refused instead of racing the first (shards still run side by side)."""
        path = self.path / PROGRESS_DIR / f"shard-{shard[0]}-of-{shard[1]}.lock"
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                owner = f.read().strip() or "another process"
                raise UserError(f"{self.path}: shard {shard[0]}/{shard[1]} is being prepared by {owner}; "
                                "wait for it to end (or stop it), then run again") from None
            except OSError:  # a filesystem without locks (some network mounts): run unguarded
                pass
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}")
            f.flush()
            yield

    def sanitize(self, chunk: int, data: ChunkData) -> ChunkData:
        """Shape-check the adapter's arrays and mark tokens holding NaN/inf missing (each one a fault)."""
        rows = self.chunk_rows(chunk)
        values, valid, faults = {}, {}, list(data.faults)
        for m, spec in self.plan.modalities.items():
            v = np.asarray(data.values[m], dtype=np.float32).reshape(len(rows), spec.tokens, spec.features)
            ok = np.asarray(data.valid[m], dtype=bool).reshape(len(rows), spec.tokens)
            values[m], valid[m], nan_faults = _drop_nonfinite(v, ok, m, self.plan.samples, rows)
            faults += nan_faults
        return ChunkData(values, valid, faults)

    def write_chunk(self, chunk: int, data: ChunkData) -> None:
        """Write one sanitized chunk; its marker goes last, so a chunk without one is redone on resume."""
        rows = self.chunk_rows(chunk)
        with zarr.config.set({"array.write_empty_chunks": True}):  # a runtime setting, not stored with the array
            root = zarr.open_group(self.path / "tokens.zarr", mode="r+")
            for m, spec in self.plan.modalities.items():
                root[m]["values"][rows.start : rows.stop] = data.values[m].astype(spec.dtype)
                root[m]["valid"][rows.start : rows.stop] = data.valid[m]
        atomic_write_json(self._marker(chunk), {"rows": [rows.start, rows.stop], "faults": data.faults})

    # ---------- finalize ----------
    def finalize(self) -> StoreMeta:
        """Once, under a lock: two shards that finish together must not both write (and remove) the same files."""
        meta_file = self.path / "store.json"
        try:
            lock = open(self.path / PROGRESS_DIR / "finalize.lock", "a")
        except FileNotFoundError:  # `_progress` is gone: another shard finalised the store
            return StoreMeta.model_validate_json(meta_file.read_bytes())
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
            except OSError:  # no locks on this filesystem
                pass
            if meta_file.exists():
                return StoreMeta.model_validate_json(meta_file.read_bytes())
            return self._finalize()

    def _finalize(self) -> StoreMeta:
        if not self.all_done():
            missing = [c for c in range(self.num_chunks) if not self._marker(c).exists()]
            raise UserError(f"{self.path}: {len(missing)} chunk(s) not prepared yet (first: {missing[0]}); run the remaining shards first")
        faults = []
        for c in range(self.num_chunks):
            faults += json.loads(self._marker(c).read_text())["faults"]
        root = zarr.open_group(self.path / "tokens.zarr", mode="r")
        samples = self.plan.samples.copy()
        train_rows = np.flatnonzero(samples["split"].to_numpy() == "train")
        modalities = {}
        for m, spec in self.plan.modalities.items():
            has = np.asarray(root[m]["valid"][:]).any(axis=1)
            samples[f"has_{m}"] = has
            if self.plan.normalization is not None:
                norm = self.plan.normalization[m]
            else:
                norm = _normalization(root[m], train_rows, self.plan.normalization_scope.get(m, "token"), self.chunk_size)
            modalities[m] = spec.model_copy(update={"normalization": norm})
        report = _report(faults, samples, list(modalities), self.plan.dropped)
        report["labels"] = split_label_counts(samples["labels"], samples["split"], self.plan.task.num_classes)
        atomic_write_json(self.path / "prepare-report.json", report)
        atomic_write(self.path / "samples.parquet", lambda p: write_parquet(samples, p))
        meta = StoreMeta(
            version=FORMAT_VERSION,
            files={name: file_digest(self.path / name) for name in DIGESTED_FILES},
            dataset=self.plan.dataset,
            provenance={**self.plan.provenance, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "miam_version": __version__},
            task=self.plan.task,
            num_samples=self.n,
            splits=split_counts(samples["split"]),
            split=self.plan.split_info,
            modalities=modalities,
        )
        atomic_write_json(self.path / "store.json", meta.model_dump())  # last: marks the store complete
        shutil.rmtree(self.path / PROGRESS_DIR, ignore_errors=True)
        return meta


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    df.to_parquet(path, index=False, write_page_checksum=True)


def split_counts(split: pd.Series) -> dict[str, int]:
    """Samples per split; `predict` only when the store has unlabelled samples (older stores read the same)."""
    counts = {s: int((split == s).sum()) for s in LABELLED_SPLITS}
    unlabelled = int((split == PREDICT_SPLIT).sum())
    return {**counts, PREDICT_SPLIT: unlabelled} if unlabelled else counts


def finite_tokens(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values with invalid tokens zeroed, valid without tokens holding NaN/inf, those bad tokens [n, T])."""
    bad = ~np.isfinite(values).all(axis=-1) & valid
    valid = valid & ~bad
    values = np.where(valid[..., None], np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    return values, valid, bad


def _drop_nonfinite(values, valid, modality, samples, rows):
    """A token with NaN/inf is invalid (the model never sees it); each affected sample is a fault."""
    values, valid, bad = finite_tokens(values, valid)
    faults = []
    for r in np.flatnonzero(bad.any(axis=1)):
        faults.append({
            "kind": "nan_values", "modality": modality, "file": None,
            "sample": str(samples["sample_id"].iloc[rows.start + r]),
            "detail": f"{int(bad[r].sum())} token(s) with NaN/inf marked missing",
        })
    return values, valid, faults


def _normalization(group, train_rows: np.ndarray, scope: str, chunk: int) -> Normalization:
    """Mean/std over the train split's valid tokens, streamed chunk by chunk (memory stays flat)."""
    if scope == "none":
        return Normalization(scope="none")
    T, F = group["values"].shape[1:]
    size = T if scope == "token" else F
    s1, s2, cnt = np.zeros(size), np.zeros(size), np.zeros(size)
    for start in range(0, len(train_rows), chunk):
        idx = train_rows[start : start + chunk]
        v = np.asarray(group["values"].get_orthogonal_selection((idx, slice(None), slice(None))), dtype=np.float64)
        ok = np.asarray(group["valid"].get_orthogonal_selection((idx, slice(None))))[..., None]
        axes = (0, 2) if scope == "token" else (0, 1)
        s1 += (v * ok).sum(axes)
        s2 += (v * v * ok).sum(axes)
        cnt += np.broadcast_to(ok, v.shape).sum(axes)
    mean = np.divide(s1, cnt, out=np.zeros(size), where=cnt > 0)
    var = np.divide(s2, cnt, out=np.ones(size), where=cnt > 0) - mean**2
    std = np.sqrt(np.clip(var, 0, None))
    std = np.where(std < 1e-6, 1.0, std)  # constant features: leave scale alone rather than divide by 0
    return Normalization(scope=scope, mean=mean.tolist(), std=std.tolist())


def _report(faults: list[dict], samples: pd.DataFrame, modalities: list[str], dropped: dict) -> dict:
    counts: dict[str, int] = {}
    for f in faults:
        counts[f["kind"]] = counts.get(f["kind"], 0) + 1
    return {
        "faults": faults,
        "counts": counts,
        "missing_rate": {m: float(1 - samples[f"has_{m}"].mean()) if len(samples) else 0.0 for m in modalities},
        "dropped": dropped,
        "samples": len(samples),
        "splits": split_counts(samples["split"]),
    }
