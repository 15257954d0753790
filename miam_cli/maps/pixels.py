"""A pixel's tokens: the dataset-spec modality builders of `prepare custom`, run at pixel centres.

Every step a point goes through on its way into a store and back out to a model is repeated here, in
the same code: the builder's token source, the writer's NaN/inf check and storage dtype, the reader's
normalisation with the run's store statistics. So a map pixel and `miam predict` on a store prepared
at that pixel's centre give the model the same numbers.
"""

from __future__ import annotations

import numpy as np
import torch

from miam_cli.data.batch import Batch
from miam_cli.data.custom import Context, build_modalities
from miam_cli.errors import UserError
from miam_cli.maps.spec import MapInputs
from miam_cli.store.compat import check_same_modalities
from miam_cli.store.reader import TokenStore
from miam_cli.store.schema import ModalitySpec
from miam_cli.store.writer import finite_tokens


class PixelTokens:
    """`batch(lon, lat) -> Batch` for the modalities a run reads; those the inputs lack are never valid."""

    def __init__(self, inputs: MapInputs, store: TokenStore, names: list[str]):
        self.inputs, self.store, self.names = inputs, store, list(names)
        self.specs: dict[str, ModalitySpec] = {}

    def check(self, lon: np.ndarray, lat: np.ndarray, run_label: str) -> list[str]:
        """Build the modalities at a few points: refuse (exit 2) what does not reproduce the run's store;
        return the run's modalities the inputs do not compute (never visible)."""
        built = build_modalities(self.inputs.modalities, Context.at(self.inputs.root, lon, lat, "the map grid", self.inputs.confine), self.inputs.source)
        specs = {m: b.spec for m, b in built.items()}
        # every modality named must be one of the store's, as it was there; only those the run reads are computed
        check_same_modalities(self.store.meta.modalities, specs, run_label, self.inputs.source, allow_missing=True)
        self.specs = {m: spec for m, spec in specs.items() if m in self.names}
        missing = [m for m in self.names if m not in self.specs]
        if len(missing) == len(self.names):
            raise UserError(f"{self.inputs.source} computes none of the modalities the run reads ({', '.join(self.names)})")
        return missing

    def read(self, lon: np.ndarray, lat: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Normalised values [n, T, F] (invalid tokens 0) and validity [n, T] of every modality the run reads."""
        ctx = Context.at(self.inputs.root, lon, lat, "the map grid", self.inputs.confine)
        built = build_modalities({m: self.inputs.modalities[m] for m in self.specs}, ctx, self.inputs.source)
        values, valid = {}, {}
        for m in self.names:
            spec = self.store.meta.modalities[m]
            if m not in built:
                values[m] = np.zeros((len(lon), spec.tokens, spec.features), np.float32)
                valid[m] = np.zeros((len(lon), spec.tokens), bool)
                continue
            raw, ok, _ = built[m].source.read(range(len(lon)), ctx.ids, m)
            raw, ok, _ = finite_tokens(raw.astype(np.float32), ok)
            # through the store's dtype and normalisation, exactly as a prepared point is read back
            v = self.store.normalize(m, raw.astype(spec.dtype).astype(np.float32), in_place=True)  # a fresh copy: ours
            v[~ok] = 0.0
            values[m], valid[m] = v, ok
        return values, valid

    def batch(self, lon: np.ndarray, lat: np.ndarray) -> Batch:
        values, valid = self.read(lon, lat)
        n = len(lon)
        return Batch({m: torch.from_numpy(np.ascontiguousarray(v)) for m, v in values.items()},
                     {m: torch.from_numpy(v) for m, v in valid.items()}, torch.zeros(n), torch.arange(n))


