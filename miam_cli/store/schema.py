"""The token store's metadata (`store.json`), validated with pydantic.

A modality's tokens are the row-major Cartesian product of its axes, in the order the axes are
listed, so every token's coordinates follow from `axes` alone (see docs/architecture.md).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_NAME = "miam-token-store"
FORMAT_VERSION = 2  # 2: crc32c checksums on every chunk, every chunk written, table digests (`files`)
READABLE_VERSIONS = (1, 2)

ModalityKind = Literal["tabular", "image", "timeseries", "audio", "embedding", "location"]
TaskType = Literal["multilabel", "multiclass"]
LABELLED_SPLITS = ("train", "val", "test")
PREDICT_SPLIT = "predict"  # unlabelled samples kept for `miam predict` (GLC test surveys, points without labels)


class Normalization(BaseModel):
    """Statistics from the train split only. `scope` says what mean/std are indexed by."""

    model_config = ConfigDict(extra="forbid")
    scope: Literal["token", "feature", "none"] = "none"
    mean: list[float] = Field(default_factory=list)
    std: list[float] = Field(default_factory=list)


class ModalitySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: ModalityKind
    tokens: int = Field(gt=0)
    features: int = Field(gt=0)
    dtype: Literal["float16", "float32"] = "float32"
    axes: dict[str, list[str | int]]
    grid: list[int] | None = None  # (rows, cols) of the sub-patch grid, for patch heat maps
    normalization: Normalization = Field(default_factory=Normalization)
    normalized_on_disk: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _axes_cover_tokens(self) -> "ModalitySpec":
        n = int(np.prod([len(v) for v in self.axes.values()])) if self.axes else 0
        if n != self.tokens:
            raise ValueError(f"axes {list(self.axes)} describe {n} tokens, not {self.tokens}")
        return self

    @property
    def axis_shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.axes.values())

    def axis_index(self, axis: str) -> np.ndarray:
        """Index of every token on `axis` (int array of length `tokens`)."""
        names = list(self.axes)
        coords = np.unravel_index(np.arange(self.tokens), self.axis_shape)
        return np.asarray(coords[names.index(axis)], dtype=np.int64)

    def token_names(self) -> list[str]:
        """Readable name per token, e.g. `band=red,patch=r0c0`."""
        names = list(self.axes)
        coords = np.unravel_index(np.arange(self.tokens), self.axis_shape)
        return [
            ",".join(f"{a}={self.axes[a][int(coords[i][t])]}" for i, a in enumerate(names))
            for t in range(self.tokens)
        ]


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: TaskType
    num_classes: int = Field(gt=0)
    metric: Literal["macro_auc", "top1"]


class StoreMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["miam-token-store"] = FORMAT_NAME
    version: int = FORMAT_VERSION
    files: dict[str, str] = Field(default_factory=dict)  # table -> "sha256:..." (version 2 on)
    dataset: str
    provenance: dict = Field(default_factory=dict)
    task: TaskSpec
    num_samples: int
    splits: dict[str, int]
    split: dict = Field(default_factory=dict)
    modalities: dict[str, ModalitySpec]
