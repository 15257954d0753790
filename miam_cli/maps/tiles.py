"""One tile of a map: its pixels as samples, scored by the run's model.

Bands, in order: the probability of each requested species; the richness (sum of every class's
probability: the expected number of species, for multi-label runs); the coverage (bit g set when
masking modality g had at least one valid token at the pixel); with contributions, the exact Shapley
value of each masking modality for the value v(S) = probability of the species (or the mean over the
requested species) with only the modalities in S visible.

A modality with no valid token at a pixel is simply not visible: the masked model predicts from the
rest, and that modality is a null player there (φ = 0 exactly: its coalitions are read from the table
of the modalities valid at that pixel). A pixel where no modality is valid is nodata (NaN) in every band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from miam_cli.attribution.estimators import all_coalitions, shapley_from_table
from miam_cli.data.batch import Batch, SplitTensors
from miam_cli.evaluate.predict import group_visibility, iter_logits, probabilities
from miam_cli.runs.loaded import LoadedRun
from miam_cli.maps.pixels import PixelTokens


@dataclass(frozen=True)
class BandPlan:
    species: tuple[int, ...]  # class indices of the probability bands
    species_ids: tuple[str, ...]
    groups: tuple[str, ...]  # the run's masking modalities (coverage bits, contribution players)
    richness: bool
    contributions: bool

    @property
    def names(self) -> list[str]:
        names = [f"p({s})" for s in self.species_ids] + (["richness"] if self.richness else []) + ["coverage"]
        return names + ([f"shapley({g})" for g in self.groups] if self.contributions else [])

    @property
    def target(self) -> str:
        return f"p({self.species_ids[0]})" if len(self.species) == 1 else f"mean p over {len(self.species)} species"


@dataclass
class TileOutput:
    bands: np.ndarray  # [B, h * w] float32, NaN where no modality is valid
    valid_pixels: int
    efficiency_gap: float  # max over pixels of |Σφ − (v(all) − v(none))| (0 without contributions)


def tile_bands(run: LoadedRun, pixels: PixelTokens, plan: BandPlan, lon: np.ndarray, lat: np.ndarray,
               batch_size: int = 1024, device="cpu") -> TileOutput:
    batch = pixels.batch(lon, lat)
    group_bits = _group_bits(run, batch)  # [n] int: bit g = masking modality g valid at the pixel
    out = np.full((len(plan.names), len(lon)), np.nan, np.float32)
    rows = np.flatnonzero(group_bits > 0)
    if len(rows) == 0:
        return TileOutput(out, 0, 0.0)
    data = SplitTensors.of(batch.select(torch.from_numpy(rows)))
    probs = _probabilities(run, data, None, batch_size, device)
    species = list(plan.species)
    bands = [probs[:, species].T] + ([probs.sum(axis=1, keepdims=True).T] if plan.richness else [])
    bands.append(group_bits[rows][None].astype(np.float64))
    gap = 0.0
    if plan.contributions:
        phi, gap = _contributions(run, data, plan, group_bits[rows], probs[:, species].mean(axis=1), batch_size, device)
        bands.append(phi)
    out[:, rows] = np.concatenate(bands).astype(np.float32)
    return TileOutput(out, len(rows), gap)


def _group_bits(run: LoadedRun, batch: Batch) -> np.ndarray:
    bits = np.zeros(len(batch), np.int64)
    for m in run.layout.modalities:
        bits |= batch.valid[m.name].any(dim=1).numpy().astype(np.int64) << m.group
    return bits


def _probabilities(run: LoadedRun, data, visible, batch_size: int, device) -> np.ndarray:
    parts = [probabilities(logits, run.task).numpy() for _, _, logits in iter_logits(run.model, data, visible, batch_size, device)]
    return np.concatenate(parts).astype(np.float64)


def _contributions(run: LoadedRun, data, plan: BandPlan, bits: np.ndarray, v_all: np.ndarray, batch_size: int, device):
    """Exact Shapley values [M, n] of the masking modalities at each pixel, and the largest efficiency gap."""
    m = len(plan.groups)
    species = list(plan.species)
    coalitions = all_coalitions(m)
    table = np.empty((2**m, len(bits)))
    for s, coalition in enumerate(coalitions):
        if s == 2**m - 1:
            table[s] = v_all  # every modality visible: the probability bands themselves
            continue
        visible = group_visibility(run.layout, [g for g, on in zip(plan.groups, coalition) if on])
        table[s] = _probabilities(run, data, visible, batch_size, device)[:, species].mean(axis=1)
    # v(S) at a pixel is v(S ∩ modalities valid there): identical inputs, so read them from one entry
    effective = np.take_along_axis(table, np.arange(2**m)[:, None] & bits[None, :], axis=0)
    phi = shapley_from_table(effective, m)
    gap = float(np.abs(phi.sum(axis=0) - (effective[-1] - effective[0])).max())
    return phi, gap
