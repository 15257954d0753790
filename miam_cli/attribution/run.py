"""`miam attribute`: choose players, estimator and report for a run (the library function behind the CLI)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from miam_cli.attribution.estimators import (
    EXACT_MAX_PLAYERS,
    FIXED_COST,
    UNIT_COST,
    KernelSampler,
    PermutationSampler,
    ShapleyResult,
    exact_shapley,
    merge,
    shapley_from_subset_values,
)
from miam_cli.attribution.games import ModelGame, Players, axis_players, modality_players, parse_target, store_modality
from miam_cli.attribution.report import efficiency_check, markdown_summary, too_few_coalitions, write_report
from miam_cli.errors import UserError
from miam_cli.files import writable_folder
from miam_cli.evaluate.metrics import primary_metric
from miam_cli.evaluate.run import LoadedRun, open_run
from miam_cli.masking.strategies import STRATEGIES
from miam_cli.store.atomic import atomic_write_json, atomic_write_text

PLOT_KIND = {"modality": "bars", "band": "bars", "variable": "bars", "year": "line", "patch": "heatmap", "token": "bars", "time": "line"}


@dataclass
class AttributionRequest:
    modality: str | None = None
    by: str | None = None
    target: str = "global"
    split: str = "test"
    context: str = "all"
    budget: int = 2000
    tolerance: float = 0.01
    seed: int = 0
    exact_max: int = 10  # exact up to this many players (2^P coalitions), sampling above
    max_samples: int | None = None
    shard: tuple[int, int] | None = None
    sampler: str = "kernel"  # above exact_max players: paired KernelSHAP, or antithetic permutations

    def __post_init__(self) -> None:
        if self.context not in ("all", "none"):
            raise UserError(f"--context {self.context!r}: expected all or none")
        if self.sampler not in SAMPLERS:
            raise UserError(f"--sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")

    @property
    def sharded(self) -> bool:
        """One shard of several (``--shard I/N`` with N > 1): a slice of the sampling, no report."""
        return self.shard is not None and self.shard[1] > 1

SAMPLERS = {"kernel": KernelSampler, "permutation": PermutationSampler}


def default_axis(run: LoadedRun, modality: str) -> str:
    spec = run.modality_specs[store_modality(run, modality)]
    for axis in ("band", "year", "variable", "patch", "time"):
        if axis in spec.axes:
            return axis
    return next(iter(spec.axes))


def coverage_warning(run: LoadedRun, players: Players) -> str | None:
    """Token-level coalitions are off-distribution for strategies that only mask whole modalities."""
    cls = STRATEGIES.get(run.strategy)
    if players.modality is not None and cls is not None and not cls.partial_masking:
        return (f"run trained with '{run.strategy}', which masks whole modalities only: the model never saw part of "
                f"{players.modality} hidden, so these {players.axis}-level values are off-distribution")
    return None


def stem_for(req: AttributionRequest, players: Players, target_label: str) -> str:
    target = "global" if req.target == "global" else req.target.replace("/", "_")
    if players.modality is None:
        return f"modalities-{target}"
    return f"{players.modality}-by-{players.axis}-{target}"


def reused_subset_values(run: LoadedRun, players: Players, req: AttributionRequest) -> dict | None:
    """eval/subsets.csv already holds v(S) for every non-empty subset of modalities (global target)."""
    path = run.path / "eval" / "subsets.csv"
    if players.modality is not None or req.target != "global" or req.max_samples or not path.exists():
        return None
    table = pd.read_csv(path)
    table = table[(table["split"] == req.split) & (table["checkpoint"] == run.which) & (table["kind"] == "subset")]
    metric = primary_metric(run.task)
    values = {}
    for _, row in table.iterrows():
        values[frozenset(players.names.index(g) for g in row["subset"].split("+"))] = float(row[metric])
    return values if len(values) == 2 ** len(players.names) - 1 else None


def estimate(game: ModelGame, players: Players, req: AttributionRequest, reuse: dict | None) -> ShapleyResult:
    P = len(players.names)
    if reuse is not None:
        reuse[frozenset()] = float(game(np.zeros((1, P), bool))[0])
        result = shapley_from_subset_values(reuse, P, players.names)
        result.evaluations = game.evaluations  # v(none) was evaluated here; the rest came from the table
        return result
    if P <= min(req.exact_max, EXACT_MAX_PLAYERS):
        return exact_shapley(game, P, players.names)
    if req.sampler not in SAMPLERS:
        raise UserError(f"--sampler {req.sampler!r}: choose one of {', '.join(SAMPLERS)}")
    sampler = SAMPLERS[req.sampler](game, P, budget=req.budget, tolerance=req.tolerance, seed=req.seed, player_names=players.names)
    if not req.sharded:
        return sampler.run()
    i, n = req.shard
    pairs = max(1, (req.budget // n - FIXED_COST[req.sampler]) // UNIT_COST[req.sampler](P))  # at most budget / n each
    return sampler.run(pairs=pairs, first_pair=i * pairs)


def run_attribution(run_dir: Path, req: AttributionRequest, out_dir: Path | None = None, device="cpu", log=print) -> dict:
    run = open_run(run_dir, "best", device)
    players = modality_players(run) if req.modality is None else axis_players(run, req.modality, req.by or default_axis(run, req.modality), req.context)
    target = parse_target(run, req.target)
    out = writable_folder(Path(out_dir) if out_dir else run.path / "attribution", "attribution folder")
    stem = stem_for(req, players, target.label)
    warning = coverage_warning(run, players)
    if warning:
        log(f"warning: {warning}")
    if req.sharded and len(players.names) <= req.exact_max:
        raise UserError(f"{len(players.names)} players are computed exactly in one run; --shard splits sampling only")
    game = ModelGame(run, players, target, req.split, device, max_samples=req.max_samples)
    reuse = reused_subset_values(run, players, req)
    result = estimate(game, players, req, reuse)
    if not np.isfinite(result.std_errors).all() and not req.sharded:
        log(f"warning: standard errors unknown: {too_few_coalitions(result)}")
    meta = {"run": str(run.path), "strategy": run.strategy, "target": target.label, "split": req.split, "context": req.context,
            "players": players.axis, "modality": players.modality, "samples": len(game.batch), "warning": warning,
            "reused_eval_subsets": reuse is not None}
    if req.sharded:
        path = out / "shards" / f"{stem}-{req.shard[0]:03d}-of-{req.shard[1]:03d}.json"
        atomic_write_json(path, {"meta": meta, "result": result.to_dict()})
        return {"shard_file": str(path), "result": result, "meta": meta}
    return _report(result, players, out, stem, meta, req)


def merge_attribution(run_dir: Path, req: AttributionRequest, out_dir: Path | None = None, device="cpu") -> dict:
    run = open_run(run_dir, "best", device)
    players = modality_players(run) if req.modality is None else axis_players(run, req.modality, req.by or default_axis(run, req.modality), req.context)
    out = Path(out_dir) if out_dir else run.path / "attribution"
    stem = stem_for(req, players, parse_target(run, req.target).label)
    files = sorted((out / "shards").glob(f"{stem}-*-of-*.json"))
    if not files:
        raise UserError(f"{out / 'shards'}: no shard files for {stem}; run attribute --shard I/N first")
    counts = {f.stem.rsplit("-of-", 1)[1] for f in files}
    if len(counts) != 1:
        raise UserError(f"shard files of different shard counts in {out / 'shards'} for {stem}: remove the stale ones")
    expected = int(counts.pop())
    if len(files) != expected:
        raise UserError(f"{len(files)} of {expected} shard files present in {out / 'shards'} for {stem}; run the missing shards first")
    docs = [json.loads(f.read_text()) for f in files]
    result = merge([ShapleyResult.from_dict(d["result"]) for d in docs], tolerance=req.tolerance)
    return _report(result, players, out, stem, {**docs[0]["meta"], "shards": len(files)}, req)


def _report(result: ShapleyResult, players: Players, out: Path, stem: str, meta: dict, req: AttributionRequest) -> dict:
    kind = PLOT_KIND.get(players.axis, "bars")
    title = f"{meta['target']} — {'modalities' if players.modality is None else f'{players.modality} by {players.axis}'}"
    write_report(result, out, stem, kind, players.names, players.grid, title, meta, summary_file=None)
    _write_summary(out)
    return {"stem": stem, "dir": str(out), "result": result, "meta": meta, "efficiency": efficiency_check(result)}


def _write_summary(out: Path) -> None:
    """summary.md regenerated from every report in the folder (no duplicates when a report is redone)."""
    parts = ["# Attribution reports\n"]
    for f in sorted(out.glob("*.json")):
        doc = json.loads(f.read_text())
        if "result" not in doc:
            continue
        result = ShapleyResult.from_dict(doc["result"])
        text = markdown_summary(result, doc.get("title", f.stem), f"{f.stem}.png")
        if doc.get("meta", {}).get("warning"):
            text += f"\n> **Coverage warning:** {doc['meta']['warning']}\n"
        parts.append(text)
    atomic_write_text(out / "summary.md", "\n".join(parts))
