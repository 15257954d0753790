"""Reading a token store.

zarr is opened lazily and per process: a DataLoader worker forked after the parent touched the
store must not share the parent's zarr/threads (they can deadlock), so the handle is keyed by pid.
"""

from __future__ import annotations

import copy
import json
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from miam_cli.errors import UserError
from miam_cli.store.integrity import check_structure, first_bad_chunk
from miam_cli.store.schema import FORMAT_VERSION, PREDICT_SPLIT, READABLE_VERSIONS, StoreMeta


READ_BLOCK_BYTES = 256 << 20  # stored values decoded per block when a split is read


class TokenStore:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        meta_file = self.path / "store.json"
        if not meta_file.exists():
            hint = " (an unfinished prepare? run it again to resume)" if (self.path / "_progress").exists() else ""
            raise UserError(f"{self.path} is not a token store: no store.json{hint}")
        try:
            self.meta = StoreMeta.model_validate(json.loads(meta_file.read_bytes()))
        except (ValueError, OSError) as e:  # JSON, UTF-8 and pydantic errors are ValueErrors
            raise UserError(f"{meta_file}: not a valid miam store.json: {(str(e).splitlines() or [type(e).__name__])[0][:200]}") from None
        if self.meta.version not in READABLE_VERSIONS:
            newer = self.meta.version > FORMAT_VERSION
            raise UserError(f"{meta_file}: store format version {self.meta.version} "
                            + ("is newer than this miam reads; upgrade miam" if newer else "is not one miam ever wrote")
                            + f" (it reads versions {', '.join(map(str, READABLE_VERSIONS))})")
        self._root = None
        self._root_pid = None
        self._checked = False

    # ---------- tables ----------
    @cached_property
    def samples(self) -> pd.DataFrame:
        return self._table("samples.parquet")

    @cached_property
    def classes(self) -> pd.DataFrame:
        return self._table("classes.parquet")

    def _table(self, name: str) -> pd.DataFrame:
        path = self.path / name
        try:  # page checksums exist in version-2 stores; older tables have none to verify
            return pd.read_parquet(path, page_checksum_verification=self.meta.version >= 2)
        except FileNotFoundError:
            raise UserError(f"{path}: missing (the store is incomplete; prepare it again)") from None
        except Exception as e:  # truncated, bit flips, not Parquet
            raise UserError(f"{path}: unreadable ({type(e).__name__}); the store is damaged, prepare it again") from None

    @cached_property
    def report(self) -> dict:
        f = self.path / "prepare-report.json"
        try:
            return json.loads(f.read_bytes()) if f.exists() else {}
        except (ValueError, OSError):
            raise UserError(f"{f}: unreadable (damaged JSON)") from None

    @property
    def modalities(self) -> list[str]:
        return list(self.meta.modalities)

    def find_class(self, text: str) -> int | None:
        """The class index named by `text`: a class index, an original id (e.g. a speciesId) or a name."""
        classes = self.classes
        for column in ("class_index", "original_id", "name"):
            match = classes.index[classes[column].astype(str) == str(text).strip()]
            if len(match):
                return int(classes.loc[match[0], "class_index"])
        return None

    def with_statistics_of(self, reference: StoreMeta) -> "TokenStore":
        """This store read with `reference`'s normalisation of the modalities both have (a model's training
        store): a store prepared without `--like` then still gives the model the tokens it was trained on."""
        other = copy.copy(self)
        other.meta = self.meta.model_copy(deep=True)
        for m, spec in other.meta.modalities.items():
            if m in reference.modalities:
                spec.normalization = reference.modalities[m].normalization
        return other

    def split_indices(self, split: str) -> np.ndarray:
        if split == PREDICT_SPLIT and split not in self.meta.splits:
            raise UserError(f"{self.path} has no {PREDICT_SPLIT} split (prepare kept no unlabelled samples); "
                            f"choose one of {', '.join(self.meta.splits)} with --split")
        if split not in self.meta.splits:
            raise UserError(f"unknown split {split!r}; this store has {', '.join(self.meta.splits)}")
        return np.flatnonzero(self.samples["split"].to_numpy() == split).astype(np.int64)

    # ---------- tokens ----------
    @property
    def root(self):
        if not self._checked:  # tables, shapes and chunk files agree with store.json, before any token is read
            check_structure(self)
            self._checked = True
        if self._root is None or self._root_pid != os.getpid():
            self._root = zarr.open_group(self.path / "tokens.zarr", mode="r")
            self._root_pid = os.getpid()
        return self._root

    def _array_read(self, modality: str, key: str, idx: np.ndarray) -> np.ndarray:
        """Rows `idx` of one array; a damaged chunk (checksum, truncation) is a UserError naming its file."""
        array = self.root[modality][key]
        try:
            return array.get_orthogonal_selection((idx,) + (slice(None),) * (array.ndim - 1))
        except Exception:
            raise UserError(f"{first_bad_chunk(array, self.path / 'tokens.zarr' / modality / key, idx)}; "
                            f"the store is damaged (`miam store verify {self.path}` lists every bad chunk)") from None

    def read(self, modality: str, indices: np.ndarray, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Values float32 [n, T, F] (normalised, invalid tokens = 0) and validity bool [n, T]."""
        valid = self.read_valid(modality, indices)  # checks the modality name first
        idx = np.asarray(indices, dtype=np.int64)
        spec = self.meta.modalities[modality]
        # filled block by block: the stored dtype (float16 for images) never exists for the whole split at once
        values = np.empty((len(idx), spec.tokens, spec.features), np.float32)
        step = max(1, READ_BLOCK_BYTES // max(1, spec.tokens * spec.features * np.dtype(spec.dtype).itemsize))
        for start in range(0, len(idx), step):
            values[start : start + step] = self._array_read(modality, "values", idx[start : start + step])
        if normalize:
            values = self.normalize(modality, values, in_place=True)
        values[~valid] = 0.0
        return values, valid

    def read_valid(self, modality: str, indices: np.ndarray) -> np.ndarray:
        """Validity bool [n, T] alone: one byte per token, without reading the values."""
        if modality not in self.meta.modalities:
            raise UserError(f"unknown modality {modality!r}; this store has {', '.join(self.modalities)}")
        idx = np.asarray(indices, dtype=np.int64)
        return np.asarray(self._array_read(modality, "valid", idx), dtype=bool)

    def normalize(self, modality: str, values: np.ndarray, in_place: bool = False) -> np.ndarray:
        """(values - mean) / std with the store's statistics. `in_place` (float32 values only) writes into
        `values`: a split loaded into memory then peaks at one float32 copy, not three (at 14,000
        GeoPlant surveys, 3.7 GB of Sentinel-2 values each); the result is the same to the bit."""
        norm = self.meta.modalities[modality].normalization
        if norm.scope == "none" or self.meta.modalities[modality].normalized_on_disk:
            return values
        mean = np.asarray(norm.mean, dtype=np.float32)
        std = np.asarray(norm.std, dtype=np.float32)
        if norm.scope == "token":
            mean, std = mean[:, None], std[:, None]
        if in_place and values.dtype == np.float32:
            np.subtract(values, mean, out=values)
            return np.divide(values, std, out=values)
        return (values - mean) / std

    def targets(self, indices: np.ndarray) -> np.ndarray:
        """Multi-hot float32 [n, C] (multilabel) or class index int64 [n] (multiclass; -1 for an unlabelled sample)."""
        labels = self.samples["labels"].to_numpy()[np.asarray(indices, dtype=np.int64)]
        C = self.meta.task.num_classes
        if self.meta.task.type == "multiclass":
            return np.array([int(lab[0]) if len(lab) else -1 for lab in labels], dtype=np.int64)
        out = np.zeros((len(labels), C), dtype=np.float32)
        for i, lab in enumerate(labels):
            out[i, np.asarray(lab, dtype=np.int64)] = 1.0
        return out
