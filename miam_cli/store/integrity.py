"""Is a token store whole? Two depths of checking, both naming the first bad file.

- `check_structure` (every open, before the first token is read; `store info`): the tables agree
  with `store.json` (row count, split counts, label range), every array exists with the shape
  `store.json` gives it, and, in checksummed stores, every chunk file exists. zarr reads a missing
  chunk as its fill value, so without this a deleted chunk would train as zeros marked valid.
- `verify_store` (`miam store verify`, in `store/verify.py`): all of the above, the tables' SHA-256 against `store.json`,
  and every chunk of every array read back, so that the crc32c checksum of each is checked.

Checksums (zarr's `crc32c` codec on every chunk, page checksums in the Parquet tables, digests of the
tables in `store.json`) exist from store format version 2 on. Version-1 stores, written before, are
still read: their chunks carry no checksum, and a chunk that holds only zeros may legitimately be
absent (zarr did not write empty chunks), so for them only shapes and tables are checked.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from miam_cli.errors import UserError

CHECKSUMMED_SINCE = 2  # the store format version that introduced chunk checksums
DIGESTED_FILES = ("samples.parquet", "classes.parquet", "prepare-report.json")
ARRAYS = ("values", "valid")


class StoreDamage(UserError):
    """A token store that is missing files or holds data that does not match its description."""


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def chunk_files(array, array_dir: Path) -> list[Path]:
    """The file of every chunk of `array` (chunked along samples only), in order."""
    grid = array.cdata_shape
    return [array_dir / array.metadata.encode_chunk_key((i,) + (0,) * (len(grid) - 1)) for i in range(grid[0])]


def check_structure(store) -> None:
    """Raise `StoreDamage` naming the first inconsistency found without reading any chunk."""
    problems = structure_problems(store, first_only=True)
    if problems:
        raise StoreDamage(f"{problems[0]}; run `miam store verify {store.path}` for a full check")


def structure_problems(store, first_only: bool = False) -> list[str]:
    problems: list[str] = []
    for check in (_table_problems, _array_problems):
        problems += check(store, first_only and not problems)
        if first_only and problems:
            break
    return problems


def _table_problems(store, first_only: bool) -> list[str]:
    meta, samples = store.meta, store.samples
    where = store.path / "samples.parquet"
    missing = [c for c in ("sample_id", "split", "lon", "lat", "labels") if c not in samples.columns]
    if missing:
        return [f"{where}: no column {', '.join(missing)}"]
    problems = []
    if len(samples) != meta.num_samples:
        problems.append(f"{where}: {len(samples)} rows, but store.json says {meta.num_samples} samples")
    counts = samples["split"].value_counts().to_dict()
    for split, n in meta.splits.items():
        if counts.get(split, 0) != n:
            problems.append(f"{where}: {counts.get(split, 0)} {split} rows, but store.json says {n}")
            break
    labels = samples["labels"].to_numpy()
    flat = np.concatenate([np.asarray(v, dtype=np.int64) for v in labels]) if len(labels) else np.zeros(0, np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= meta.task.num_classes):
        problems.append(f"{where}: class index {int(flat.max() if flat.max() >= meta.task.num_classes else flat.min())} "
                        f"outside 0..{meta.task.num_classes - 1}")
    return problems[:1] if first_only else problems


def _array_problems(store, first_only: bool) -> list[str]:
    """Arrays present with the described shapes; in checksummed stores, every chunk file present."""
    import zarr

    meta, zdir = store.meta, store.path / "tokens.zarr"
    try:
        root = zarr.open_group(zdir, mode="r")
    except Exception as e:  # absent folder, damaged zarr.json
        return [f"{zdir}: not a readable zarr group ({type(e).__name__})"]
    problems = []
    for m, spec in meta.modalities.items():
        expected = {"values": (meta.num_samples, spec.tokens, spec.features), "valid": (meta.num_samples, spec.tokens)}
        for key in ARRAYS:
            try:
                array = root[f"{m}/{key}"]
            except Exception as e:
                problems.append(f"{zdir / m / key}: missing or unreadable array ({type(e).__name__})")
                continue
            if tuple(array.shape) != expected[key]:
                problems.append(f"{zdir / m / key}: shape {list(array.shape)}, but store.json says {list(expected[key])}")
            elif meta.version >= CHECKSUMMED_SINCE:
                absent = [f for f in chunk_files(array, zdir / m / key) if not f.is_file()]
                if absent:
                    problems.append(f"{absent[0]}: chunk file missing ({len(absent)} of this array's chunks are)")
            if first_only and problems:
                return problems
    return problems


def read_failure(e: Exception) -> str:
    """Why a chunk could not be read, in two words (the checksum, or the exception's type)."""
    text = str(e)
    if "checksum" in text.lower():
        return "checksum mismatch"
    return type(e).__name__


def first_bad_chunk(array, array_dir: Path, rows: np.ndarray) -> str:
    """After a failed read of `rows`: the first of their chunks that fails alone, named by its file."""
    chunk = array.chunks[0]
    for i in np.unique(np.asarray(rows, dtype=np.int64) // chunk):
        f = chunk_files(array, array_dir)[int(i)]
        try:
            array.get_block_selection((int(i),))
        except Exception as e:
            return f"{f}: unreadable chunk ({read_failure(e)})"
    return f"{array_dir}: unreadable"
