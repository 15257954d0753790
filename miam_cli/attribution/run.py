"""`miam attribute`: choose players, estimator and report for a run (the library function behind the CLI)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from miam_cli.attribution.estimators import (
    EXACT_MAX_PLAYERS,
    FIXED_COST,
    UNIT_COST,
    CoalitionCache,
    KernelSampler,
    PermutationSampler,
    ProgressFn,
    ShapleyResult,
    Tolerance,
    exact_shapley,
    merge,
    shapley_from_subset_values,
)
from miam_cli.attribution import defaults
from miam_cli.attribution.games import ModelGame, Players, axis_players, modality_players, parse_target, store_modality
from miam_cli.attribution.report import efficiency_check, markdown_summary, too_few_coalitions, write_report
from miam_cli.errors import UserError
from miam_cli.files import writable_folder
from miam_cli.scoring.metrics import primary_metric
from miam_cli.runs.loaded import LoadedRun, open_run
from miam_cli.masking.strategies import STRATEGIES
from miam_cli.shards import complete_shard_files, is_partial, shard_name
from miam_cli.plotstyle import AXIS_LABELS, METRIC_LABELS, metric_label
from miam_cli.store.atomic import atomic_write_json, atomic_write_text

PLOT_KIND = {"modality": "bars", "band": "bars", "variable": "bars", "year": "line", "patch": "heatmap", "token": "bars", "time": "line"}


@dataclass
class AttributionRequest:
    modality: str | None = None
    by: str | None = None
    target: str = "global"
    split: str = "test"
    context: str = "all"
    budget: int = defaults.BUDGET
    tolerance: float | str | Tolerance = defaults.TOLERANCE  # largest standard error to stop at: game units, or "5%" of |v(all) - v(none)|
    seed: int = 0
    exact_max: int = 10  # exact up to this many players (2^P coalitions), sampling above
    max_samples: int | None = None
    shard: tuple[int, int] | None = None
    sampler: str = "kernel"  # above exact_max players: paired KernelSHAP, or antithetic permutations
    plot_format: str = "png"  # png (200 dpi) | svg | pdf

    def __post_init__(self) -> None:
        if self.context not in ("all", "none"):
            raise UserError(f"--context {self.context!r}: expected all or none")
        if self.sampler not in SAMPLERS:
            raise UserError(f"--sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")

    @property
    def sharded(self) -> bool:
        """One shard of several (``--shard I/N`` with N > 1): a slice of the sampling, no report."""
        return is_partial(self.shard)

SAMPLERS = {"kernel": KernelSampler, "permutation": PermutationSampler}


@dataclass
class AttributionReport:
    """What `miam attribute` made: a report (CSV, JSON, figure, summary.md), or one shard's file to merge."""

    result: ShapleyResult
    meta: dict
    efficiency: dict  # sum_phi, v_all_minus_v_none, gap (empty for a shard)
    path: Path | None  # the report's CSV (None for a shard, whose file is `shard_file`)
    shard_file: Path | None = None
    title: str = ""
    figure: str | None = None  # the figure's file name, beside the CSV

    @property
    def table(self) -> pd.DataFrame:
        """player, phi, std_error, evaluations: one row per player, largest contribution first."""
        return pd.DataFrame(self.result.to_records()).sort_values("phi", ascending=False, ignore_index=True)


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
    """The report's file name: players, target, context (for the tokens of one modality) and split,
    so that reports of different settings never overwrite each other."""
    target = "global" if req.target == "global" else req.target.replace("/", "_")
    if players.modality is None:
        return f"modalities-{target}-{req.split}"
    return f"{players.modality}-by-{players.axis}-{target}-context-{req.context}-{req.split}"


def reused_subset_values(run: LoadedRun, players: Players, req: AttributionRequest) -> dict | None:
    """eval/subsets.csv already holds v(S) for every non-empty subset of modalities (global target)."""
    path = run.rundir.subsets_table
    if players.modality is not None or req.target != "global" or req.max_samples or not path.exists():
        return None
    table = pd.read_csv(path)
    table = table[(table["split"] == req.split) & (table["checkpoint"] == run.which) & (table["kind"] == "subset")]
    metric = primary_metric(run.task)
    values = {}
    for _, row in table.iterrows():
        values[frozenset(players.names.index(g) for g in row["subset"].split("+"))] = float(row[metric])
    return values if len(values) == 2 ** len(players.names) - 1 else None


def estimate(game: ModelGame, players: Players, req: AttributionRequest, reuse: dict | None,
             progress: ProgressFn | None = None, cache: CoalitionCache | None = None) -> ShapleyResult:
    """The report's Shapley values. `cache` (around `game`) may hold values measured before, e.g. by
    `time_per_evaluation`: they are reused, counted in the result's evaluations, and the budget pays for them."""
    P = len(players.names)
    if reuse is not None:
        reuse[frozenset()] = float(game(np.zeros((1, P), bool))[0])
        result = shapley_from_subset_values(reuse, P, players.names)
        result.evaluations = game.evaluations  # v(none) was evaluated here; the rest came from the table
        result.reused = len(reuse) - game.evaluations
        return result
    cache = CoalitionCache(game, P) if cache is None else cache
    spent = cache.evaluations
    if progress is not None and spent:  # progress counts what the report spent, as the result does
        progress = (lambda tell: lambda done, *rest: tell(done + spent, *rest))(progress)
    if P <= min(req.exact_max, EXACT_MAX_PLAYERS):
        result = exact_shapley(cache, P, players.names)
    else:
        if req.sampler not in SAMPLERS:
            raise UserError(f"--sampler {req.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        sampler = SAMPLERS[req.sampler](cache, P, budget=max(1, req.budget - spent), tolerance=Tolerance.of(req.tolerance),
                                        seed=req.seed, player_names=players.names, progress=progress)
        if not req.sharded:
            result = sampler.run()
        else:
            i, n = req.shard
            pairs = max(1, (req.budget // n - FIXED_COST[req.sampler]) // UNIT_COST[req.sampler](P))  # at most budget / n each
            result = sampler.run(pairs=pairs, first_pair=i * pairs)
    result.evaluations += spent  # the values measured before the estimator started are part of the cost
    return result


def planned_evaluations(players: Players, req: AttributionRequest, reuse: dict | None) -> int:
    """Coalition evaluations the estimate will spend at most: 1 when eval-subsets' table is reused,
    2^P when exact, else the budget (or this shard's share of it)."""
    P = len(players.names)
    if reuse is not None:
        return 1
    if P <= min(req.exact_max, EXACT_MAX_PLAYERS):
        return 2 ** P
    return req.budget // req.shard[1] if req.sharded else req.budget


def time_per_evaluation(cache: CoalitionCache, game: ModelGame) -> float:
    """Seconds per coalition evaluation, from v(all) and v(none) (on average as many tokens as a
    half-size coalition), timed once the split's tokens are embedded. Every estimator needs these two
    values, and `cache` keeps them: the estimate of the time costs no evaluation."""
    game.embed()
    P = len(game.players.names)
    start = time.perf_counter()
    cache.values(np.stack([np.ones(P, bool), np.zeros(P, bool)]))
    return (time.perf_counter() - start) / 2


def run_attribution(run_dir: Path | LoadedRun, req: AttributionRequest, out_dir: Path | None = None, device="cpu", log=print,
                    progress=None) -> AttributionReport:
    """One report (or one shard's samples). `progress(evaluations, planned, largest standard error,
    stopping error)`, when given, hears from the samplers after every batch; a time estimate for the
    plan is logged before it starts."""
    started = time.monotonic()
    Tolerance.of(req.tolerance)  # a bad --tolerance fails before the game is built
    run = run_dir if isinstance(run_dir, LoadedRun) else open_run(run_dir, "best", device)
    players = modality_players(run) if req.modality is None else axis_players(run, req.modality, req.by or default_axis(run, req.modality), req.context)
    target = parse_target(run, req.target)
    out = writable_folder(Path(out_dir) if out_dir else run.rundir.attribution_dir, "attribution folder")
    stem = stem_for(req, players, target.label)
    warning = coverage_warning(run, players)
    if warning:
        log(f"warning: {warning}")
    if req.sharded and len(players.names) <= req.exact_max:
        raise UserError(f"{len(players.names)} players are computed exactly in one run; --shard splits sampling only")
    game = ModelGame(run, players, target, req.split, device, max_samples=req.max_samples)
    reuse = reused_subset_values(run, players, req)
    planned = planned_evaluations(players, req, reuse)
    cache = CoalitionCache(game, len(players.names))
    if planned > 1:
        seconds = planned * time_per_evaluation(cache, game)
        log(f"{len(players.names)} players ({players.axis}), {len(game.batch):,} {req.split} samples: "
            f"up to {planned:,} coalition evaluations, about {_duration(seconds)} at the speed just measured"
            + ("" if planned == 2 ** len(players.names) else "; --budget sets the most, --tolerance stops sooner"))
    tell = None if progress is None else (lambda done, largest, target: progress(done, planned, largest, target))
    result = estimate(game, players, req, reuse, tell, cache)
    if not np.isfinite(result.std_errors).all() and not req.sharded:
        log(f"warning: standard errors unknown: {too_few_coalitions(result)}")
    meta = {"run": str(run.path), "strategy": run.strategy, "target": target.label, "split": req.split, "context": req.context,
            "players": players.axis, "modality": players.modality, "samples": len(game.batch), "warning": warning,
            "reused_eval_subsets": reuse is not None, "tolerance": str(Tolerance.of(req.tolerance)),
            "seconds": round(time.monotonic() - started, 2)}
    if req.sharded:
        path = out / "shards" / shard_name(stem, req.shard, ".json")
        atomic_write_json(path, {"meta": meta, "result": result.to_dict()})
        return AttributionReport(result, meta, {}, None, shard_file=path)
    return _report(result, players, out, stem, meta, req)


def merge_attribution(run_dir: Path | LoadedRun, req: AttributionRequest, out_dir: Path | None = None,
                      device="cpu") -> AttributionReport:
    run = run_dir if isinstance(run_dir, LoadedRun) else open_run(run_dir, "best", device)
    players = modality_players(run) if req.modality is None else axis_players(run, req.modality, req.by or default_axis(run, req.modality), req.context)
    out = Path(out_dir) if out_dir else run.rundir.attribution_dir
    stem = stem_for(req, players, parse_target(run, req.target).label)
    files = complete_shard_files(out / "shards", stem, ".json", "attribute")
    docs = [json.loads(f.read_text()) for f in files]
    result = merge([ShapleyResult.from_dict(d["result"]) for d in docs], tolerance=Tolerance.of(req.tolerance))
    return _report(result, players, out, stem, {**docs[0]["meta"], "shards": len(files)}, req)


def _report(result: ShapleyResult, players: Players, out: Path, stem: str, meta: dict, req: AttributionRequest) -> AttributionReport:
    kind, title = PLOT_KIND.get(players.axis, "bars"), report_title(players, meta["target"])
    write_report(result, out, stem, kind, players.names, players.grid, title, meta, summary_file=None, plot_format=req.plot_format)
    _write_summary(out)
    return AttributionReport(result, meta, efficiency_check(result), out / f"{stem}.csv", title=title,
                             figure=f"{stem}.{req.plot_format}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def report_title(players: Players, target: str) -> str:
    """`Contribution of each sentinel2 spectral band to the macro AUC`: what was shared out, and what."""
    what = "input modality" if players.modality is None else f"{players.modality} {AXIS_LABELS.get(players.axis, players.axis)}"
    return f"Contribution of each {what} to the {TARGET_WORDS.get(target, target)}"


TARGET_WORDS = {**{m: metric_label(m) for m in METRIC_LABELS}, "-loss": "mean loss (its decrease)"}


def _write_summary(out: Path) -> None:
    """summary.md regenerated from every report in the folder (no duplicates when a report is redone)."""
    parts = ["# Attribution reports\n"]
    for f in sorted(out.glob("*.json")):
        doc = json.loads(f.read_text())
        if "result" not in doc:
            continue
        result = ShapleyResult.from_dict(doc["result"])
        text = markdown_summary(result, doc.get("title", f.stem), doc.get("figure", f"{f.stem}.png"))
        if doc.get("meta", {}).get("warning"):
            text += f"\n> **Coverage warning:** {doc['meta']['warning']}\n"
        parts.append(text)
    atomic_write_text(out / "summary.md", "\n".join(parts))
