"""Where every token of a model's input lives: modalities, their axes and their masking groups.

The model reads several *store* modalities (tabular, sentinel2, landsat, ...). A recipe may group
them into fewer *masking* modalities (GeoPlant masks landsat and bioclim together as "timeseries"),
so each store modality carries the index of its group. The flat token order used by the masking
code (`build_keep`'s `valid`/`token_group`) is the concatenation of the modalities in layout order,
each modality's tokens in row-major order of its axes (docs/architecture.md, "Token layout rule").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

KINDS = ("tabular", "image", "timeseries", "audio", "embedding", "location")


@dataclass(frozen=True)
class ModalityLayout:
    """One store modality as the model sees it: `tokens` tokens of `features` values each."""

    name: str
    kind: str
    tokens: int
    features: int
    axes: dict[str, list] = field(default_factory=dict)
    group: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"modality {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.tokens < 1 or self.features < 1:
            raise ValueError(f"modality {self.name!r}: tokens and features must be >= 1")
        if not self.axes:
            # A modality without named axes still needs one axis for its position embedding.
            object.__setattr__(self, "axes", {"token": list(range(self.tokens))})
        n = int(np.prod(self.axis_shape))
        if n != self.tokens:
            raise ValueError(f"modality {self.name!r}: axes {list(self.axes)} give {n} tokens, not {self.tokens}")

    @property
    def axis_shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.axes.values())

    def axis_index(self, axis: str) -> np.ndarray:
        """int64 [T]: each token's index on `axis` (row-major layout)."""
        coords = np.unravel_index(np.arange(self.tokens), self.axis_shape)
        return coords[list(self.axes).index(axis)].astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "tokens": self.tokens, "features": self.features,
            "axes": {k: list(v) for k, v in self.axes.items()}, "group": self.group,
        }


@dataclass(frozen=True)
class TokenLayout:
    """The model's input: store modalities in order, and the names of the masking groups."""

    modalities: tuple[ModalityLayout, ...]
    group_names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "group_names", tuple(self.group_names))
        names = self.names
        if not names:
            raise ValueError("a token layout needs at least one modality")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate modality names in layout: {names}")
        used = {m.group for m in self.modalities}
        if not used <= set(range(len(self.group_names))):
            raise ValueError(f"group indices {sorted(used)} out of range for groups {self.group_names}")
        empty = [g for i, g in enumerate(self.group_names) if i not in used]
        if empty:
            raise ValueError(f"masking groups with no modality: {empty}")

    @classmethod
    def from_specs(cls, specs: Mapping[str, Any], groups: Mapping[str, list[str]] | None = None) -> TokenLayout:
        """Build from store modality specs (anything with kind/tokens/features/axes, e.g. StoreMeta's).

        `groups` maps a masking-group name to its store modalities (default: one group per modality);
        store modalities in no group are not read by the model.
        """
        groups = dict(groups) if groups is not None else {name: [name] for name in specs}
        mods = []
        for g, (group, members) in enumerate(groups.items()):
            for name in members:
                if name not in specs:
                    raise ValueError(f"group {group!r} names modality {name!r}, not in {list(specs)}")
                s = specs[name]
                mods.append(ModalityLayout(name, str(s.kind), int(s.tokens), int(s.features), dict(s.axes), g))
        return cls(tuple(mods), tuple(groups))

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modalities]

    def __getitem__(self, name: str) -> ModalityLayout:
        return self.modalities[self.names.index(name)]

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start of each modality in the flat order, plus the total at the end (length M+1)."""
        return tuple(int(x) for x in np.cumsum([0] + [m.tokens for m in self.modalities]))

    @property
    def total_tokens(self) -> int:
        return self.offsets[-1]

    @property
    def num_groups(self) -> int:
        return len(self.group_names)

    def group_tokens(self) -> list[int]:
        """Tokens per masking group (the sum over its store modalities), in group order."""
        counts = [0] * self.num_groups
        for m in self.modalities:
            counts[m.group] += m.tokens
        return counts

    @property
    def token_group(self) -> Tensor:
        """LongTensor [T_total]: each flat token's masking group."""
        return torch.cat([torch.full((m.tokens,), m.group, dtype=torch.long) for m in self.modalities])

    def flatten_keep(self, keep: Mapping[str, Tensor]) -> Tensor:
        """Per-modality [B, T_m] tensors -> one [B, T_total] tensor in flat order."""
        return torch.cat([keep[m.name] for m in self.modalities], dim=1)

    def split_flat(self, flat: Tensor) -> dict[str, Tensor]:
        """Inverse of `flatten_keep`: [B, T_total, ...] -> {modality: [B, T_m, ...]} (views)."""
        if flat.shape[1] != self.total_tokens:
            raise ValueError(f"expected {self.total_tokens} tokens on dim 1, got {tuple(flat.shape)}")
        sizes = [m.tokens for m in self.modalities]
        return dict(zip(self.names, torch.split(flat, sizes, dim=1)))

    def to_dict(self) -> dict[str, Any]:
        return {"modalities": [m.to_dict() for m in self.modalities], "group_names": list(self.group_names)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TokenLayout:
        return cls(tuple(ModalityLayout(**m) for m in d["modalities"]), tuple(d["group_names"]))
