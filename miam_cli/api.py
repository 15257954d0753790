"""The Python API: what the `miam` commands do, as functions that return typed results.

    from miam_cli import api

    run = api.load_run("runs/demo-miam")                      # model, store, masking modalities
    preds = api.predict(run, split="test", top_k=5)          # PredictResult; .table is a DataFrame
    subsets = api.evaluate_subsets(run, subsets=["unimodal"])  # SubsetTable; .table, .path
    report = api.attribute(run)                               # AttributionReport; .table, .efficiency
    grid = api.predict_map(run, "map.yaml", contributions=True)  # MapResult; .path is a GeoTIFF

Every function takes a run opened by `load_run` or a run directory, writes the same files as the
command of the same name (`miam predict`, `eval-subsets`, `attribute`, `map`), and raises
`miam_cli.errors.UserError` for input it refuses. The commands are thin shells over these functions.
See docs/api.md.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pandas as pd

from miam_cli import threads as thread_policy
from miam_cli.attribution import defaults as attribution_defaults
from miam_cli.attribution.estimators import Tolerance
from miam_cli.attribution.run import AttributionReport
from miam_cli.runs.loaded import LoadedRun, open_run
from miam_cli.predict.run import PredictRequest, PredictResult, run_predict

if TYPE_CHECKING:  # maps need GDAL (rasterio): loaded by predict_map, not by `import api`
    from miam_cli.maps.run import MapResult

__all__ = ["load_run", "predict", "evaluate_subsets", "attribute", "predict_map", "LoadedRun", "PredictResult",
           "SubsetTable", "AttributionReport", "MapResult"]

Progress = Callable[[int, int], None] | None
RunLike = LoadedRun | str | Path


@dataclass
class SubsetTable:
    table: pd.DataFrame  # one row per subset or selector: metrics, visible tokens, samples
    path: Path  # eval/subsets.csv (or this shard's file)


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "auto") -> LoadedRun:
    """A trained run: `.model`, `.store` (its token store), `.groups` (masking modalities), `.task`."""
    return open_run(Path(run_dir), checkpoint, device)


def _opened(run: RunLike, checkpoint: str = "best", device: str = "auto") -> LoadedRun:
    return run if isinstance(run, LoadedRun) else load_run(run, checkpoint, device)


def _device(run: LoadedRun) -> str:
    return str(next(run.model.parameters()).device)


def _threads(threads: int | None, log: Callable[[str], None] | None) -> AbstractContextManager:
    """The thread policy (miam_cli.threads) for one call: `threads` CPU threads, or by default
    SLURM_CPUS_PER_TASK, OMP_NUM_THREADS, else the CPUs this process may use; the choice is logged
    once, and the caller's torch thread count comes back afterwards."""
    return thread_policy.limited(threads, log)


def predict(run: RunLike, store: str | Path | None = None, *, split: str = "predict", subsets: list[str] | None = None,
            species: list[str] | None = None, top_k: int | None = None, threshold: float | None = None, format: str = "parquet",
            out: str | Path | None = None, shard: tuple[int, int] | None = None, merge: bool = False, batch_size: int = 1024,
            progress: Progress = None, threads: int | None = None, log: Callable[[str], None] | None = None) -> PredictResult:
    """Probabilities for the samples of `split` of `store` (default: the run's store) -> a Parquet/CSV table or a
    GeoLifeCLEF submission (`format="glc"`). `subsets`: selectors of the visible modalities (default: all)."""
    run = _opened(run)
    req = PredictRequest(Path(store) if store else None, split, subsets, species, top_k, threshold, format,
                         Path(out) if out else None, shard, merge, batch_size)
    with _threads(threads, log):
        return run_predict(run, req, _device(run), progress)


def evaluate_subsets(run: RunLike, *, split: str = "test", subsets: list[str] | None = None, shard: tuple[int, int] | None = None,
                     merge: bool = False, batch_size: int = 1024, plot_format: str = "png", progress: Progress = None,
                     threads: int | None = None, log: Callable[[str], None] | None = None) -> SubsetTable:
    """The model on every non-empty subset of its modalities (`subsets=None`), `unimodal`, or selectors."""
    from miam_cli.evaluate.subsets import run_eval_subsets

    run = _opened(run)
    with _threads(threads, log):
        table, path = run_eval_subsets(run, split, run.which, subsets, shard, merge, batch_size, _device(run), progress, plot_format)
    return SubsetTable(table, Path(path))


def attribute(run: RunLike, *, modality: str | None = None, by: str | None = None, target: str = "global", split: str = "test",
              context: str = "all", budget: int = attribution_defaults.BUDGET,
              tolerance: float | str | Tolerance = attribution_defaults.TOLERANCE, seed: int = 0, exact_max: int = 10,
              max_samples: int | None = None, sampler: str = "kernel", shard: tuple[int, int] | None = None, merge: bool = False,
              out: str | Path | None = None, plot_format: str = "png", threads: int | None = None,
              log: Callable[[str], None] = lambda _m: None, progress=None) -> AttributionReport:
    """Shapley values of the modalities, or of one modality's tokens grouped by an axis (band, year, patch, ...).
    Sampling stops once the largest standard error is at most `tolerance`: a number in the target's units
    (AUC, top-1, minus the loss, a probability), text such as "5%" of |v(all) - v(none)|, or both
    ("0.001,2%", the default: whichever is larger); or when `budget` coalition evaluations are spent. `progress(evaluations, planned, largest standard error,
    stopping error)` hears from the samplers after every batch."""
    from miam_cli.attribution.run import AttributionRequest, merge_attribution, run_attribution

    tolerance = Tolerance.of(tolerance)  # a malformed tolerance is refused before the run loads
    run = _opened(run)
    req = AttributionRequest(modality=modality, by=by, target=target, split=split, context=context, budget=budget,
                             tolerance=tolerance, seed=seed, exact_max=exact_max, max_samples=max_samples, shard=shard,
                             sampler=sampler, plot_format=plot_format)
    out = Path(out) if out else None
    if merge:
        return merge_attribution(run, req, out, _device(run))
    with _threads(threads, log):
        return run_attribution(run, req, out, _device(run), log=log, progress=progress)


def predict_map(run: RunLike, spec: str | Path, *, out: str | Path | None = None, species: list[str] | None = None,
                contributions: bool = False, tile: int | None = None, shard: tuple[int, int] | None = None, merge: bool = False,
                overwrite: bool = False, batch_size: int = 1024, progress: Progress = None, threads: int | None = None,
                log: Callable[[str], None] = lambda _m: None) -> MapResult:
    """A Cloud-Optimised GeoTIFF over the spec's grid: one probability band per species, richness, coverage, and with
    `contributions` one exact modality-Shapley band per modality."""
    from miam_cli.maps.run import MapRequest, run_map

    run = _opened(run)
    req = MapRequest(Path(spec), Path(out) if out else None, species, contributions, tile, shard, merge, overwrite, batch_size)
    with _threads(threads, log):
        return run_map(run, req, _device(run), progress, log)


def __getattr__(name: str):
    """`api.MapResult` on first use, so that `import api` does not load GDAL."""
    if name == "MapResult":
        from miam_cli.maps.run import MapResult

        return MapResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
