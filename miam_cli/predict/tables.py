"""What `miam predict` writes: one row per sample, streamed to Parquet or CSV, or a GeoLifeCLEF submission.

- top-k: `species_1, prob_1, ..., species_k, prob_k` (species = the class's original id, most probable first);
- `--species`: one probability column per requested species, named by its original id;
- `--format glc`: `surveyId,predictions` with the predicted species ids space-separated (the top k, or
  every species at or above a threshold, most probable first), as GeoLifeCLEF submissions are.

Ties are broken by class index (a stable sort), so the same model gives the same file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from miam_cli.files import writable_file

FORMATS = ("parquet", "csv", "glc")
SUFFIX = {"parquet": ".parquet", "csv": ".csv", "glc": ".csv"}


def ranked(probs: np.ndarray) -> np.ndarray:
    """Class indices of each row, most probable first (ties by class index)."""
    return np.argsort(-probs, axis=1, kind="stable")


def top_k_columns(probs: np.ndarray, class_ids: np.ndarray, k: int) -> pd.DataFrame:
    order = ranked(probs)[:, :k]
    columns = {}
    for j in range(order.shape[1]):
        columns[f"species_{j + 1}"] = class_ids[order[:, j]]
        columns[f"prob_{j + 1}"] = np.take_along_axis(probs, order[:, j : j + 1], axis=1)[:, 0]
    return pd.DataFrame(columns)


def species_columns(probs: np.ndarray, class_ids: np.ndarray, species: list[int]) -> pd.DataFrame:
    return pd.DataFrame({str(class_ids[k]): probs[:, k] for k in species})


def glc_rows(sample_ids: np.ndarray, probs: np.ndarray, class_ids: np.ndarray, k: int | None, threshold: float | None) -> pd.DataFrame:
    """GeoLifeCLEF submission rows: the top k ids, or those with p >= threshold (at most k when both are given)."""
    order = ranked(probs)
    predictions = []
    for row, idx in zip(probs, order):
        chosen = idx if threshold is None else idx[row[idx] >= threshold]
        predictions.append(" ".join(class_ids[chosen[:k] if k else chosen]))
    return pd.DataFrame({"surveyId": sample_ids, "predictions": predictions})


class TableWriter:
    """Rows appended a batch at a time to a temporary file that is renamed onto `path` when complete:
    memory stays flat in the number of samples, and a reader never sees half a table."""

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = writable_file(path, "output file"), fmt
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.rows = 0
        self._parquet = None
        self._columns: list[str] | None = None

    def write(self, frame: pd.DataFrame) -> None:
        if self._columns is None:
            self._columns = list(frame.columns)
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.tmp, table.schema)
            self._parquet.write_table(table)
        else:
            frame.to_csv(self.tmp, mode="a", header=self.rows == 0, index=False)
        self.rows += len(frame)

    def close(self, empty_columns: list[str]) -> int:
        """Finish the file (an empty table still has its header) and rename it onto `path`."""
        if self.rows == 0:
            empty = pd.DataFrame(columns=empty_columns)
            if self.fmt == "parquet":
                empty.to_parquet(self.tmp, index=False)
            else:
                empty.to_csv(self.tmp, index=False)
        if self._parquet is not None:
            self._parquet.close()
        os.replace(self.tmp, self.path)
        return self.rows

    def abort(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        self.tmp.unlink(missing_ok=True)


def read_table(path: Path) -> pd.DataFrame:
    path = Path(path)
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"surveyId": str, "sample_id": str})
