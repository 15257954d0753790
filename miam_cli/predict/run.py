"""`miam predict RUN [STORE]`: the library function behind the command.

The samples of one split (default: `predict`, the unlabelled samples that `prepare` keeps) are scored
with the visible modalities chosen by `--subsets` (every modality by default); the store is read with
the run's training statistics, so a store prepared without `--like` still gives the model the tokens
it was trained on, and one whose modalities differ is refused (exit 2). Rows are streamed to the
output file batch by batch. `--shard I/N` scores the I-th of N contiguous slices of the split into
its own file; `--merge` joins them into the same file as an unsharded run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from miam_cli.data.batch import StoreBatches, load_split
from miam_cli.errors import UserError
from miam_cli.evaluate.predict import iter_logits, probabilities
from miam_cli.runs.loaded import LoadedRun
from miam_cli.evaluate.subsets import SubsetSpec, subset_specs
from miam_cli.predict.species import resolve_species
from miam_cli.predict.tables import FORMATS, SUFFIX, TableWriter, glc_rows, read_table, species_columns, top_k_columns
from miam_cli.store.compat import check_same_modalities
from miam_cli.store.reader import TokenStore
from miam_cli.shards import Shard, complete_shard_files, contiguous, is_partial, shard_name
from miam_cli.store.schema import PREDICT_SPLIT

DEFAULT_TOP_K = {"parquet": 10, "csv": 10, "glc": 25}


@dataclass
class PredictRequest:
    store: Path | None = None  # default: the run's own store
    split: str = PREDICT_SPLIT
    subsets: list[str] | None = None  # selectors, as in eval-subsets; default: every modality visible
    species: list[str] | None = None  # one column each instead of the top k
    top_k: int | None = None
    threshold: float | None = None  # glc: every species at or above it
    format: str = "parquet"
    out: Path | None = None
    shard: tuple[int, int] | None = None
    merge: bool = False
    batch_size: int = 1024
    max_bytes: int = 4 << 30  # a split larger than this is streamed from the store a batch at a time

    @property
    def sharded(self) -> bool:
        return is_partial(self.shard)


@dataclass
class PredictResult:
    path: Path
    rows: int
    columns: list[str]
    split: str
    store: Path
    subsets: list[str]
    format: str
    species: list[str] | None = None
    top_k: int | None = None
    shard: tuple[int, int] | None = None
    streamed: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def table(self) -> pd.DataFrame:
        """The file written, read back (a DataFrame)."""
        return read_table(self.path)


def default_output(run: LoadedRun, store: TokenStore, req: PredictRequest) -> Path:
    stem = f"{store.path.name}-{req.split}" + ("-glc" if req.format == "glc" else "")
    return run.rundir.predict_dir / f"{stem}{SUFFIX[req.format]}"


def shard_dir(out: Path) -> Path:
    return out.parent / f"{out.name}.shards"


def shard_path(out: Path, shard: Shard) -> Path:
    return shard_dir(out) / shard_name(out.stem, shard, out.suffix)


def run_predict(run: LoadedRun, req: PredictRequest, device="cpu", progress: Callable[[int, int], None] | None = None) -> PredictResult:
    if req.format not in FORMATS:
        raise UserError(f"--format {req.format!r}: choose one of {', '.join(FORMATS)}")
    store = prediction_store(run, req.store)
    species = resolve_species(run.store, req.species)
    if req.format == "glc" and species:
        raise UserError("--format glc ranks every species; drop --species (or use --format parquet/csv for chosen species)")
    top_k = min(req.top_k or DEFAULT_TOP_K[req.format], run.store.meta.task.num_classes)
    out = Path(req.out) if req.out else default_output(run, store, req)
    specs = subset_specs(run, req.subsets or ["+".join(run.layout.group_names)])
    result = PredictResult(out, 0, [], req.split, store.path, [s.label for s in specs], req.format,
                           [str(class_ids(run)[k]) for k in species] if species else None,
                           None if species else top_k, req.shard if req.sharded else None)
    if req.merge:
        return _merge(result, req)
    data = load_split(store, req.split, run.layout.names, req.max_bytes)
    result.streamed = isinstance(data, StoreBatches)
    rows = _rows(contiguous(len(data), req.shard)) if req.sharded else None
    path = shard_path(out, req.shard) if req.sharded else out
    writer = TableWriter(path, "csv" if req.format == "glc" else req.format)
    try:
        for frame in _frames(run, store, data, specs, species, top_k, req, device, rows, progress):
            writer.write(frame)
        result.rows = writer.close(_columns(run, specs, species, top_k, req))
    except BaseException:
        writer.abort()
        raise
    result.path, result.columns = path, _columns(run, specs, species, top_k, req)
    return result


def prediction_store(run: LoadedRun, path: Path | None) -> TokenStore:
    """The store to score, read with the run's normalisation; refused when its modalities differ from the run's."""
    if path is None or Path(path).resolve() == run.store.path.resolve():
        return run.store
    store = TokenStore(path)
    candidate = {m: store.meta.modalities[m] for m in run.layout.names if m in store.meta.modalities}
    check_same_modalities(run.modality_specs, candidate, f"the run's store {run.store.path}", f"store {store.path}")
    return store.with_statistics_of(run.store.meta)


def _rows(rows: range) -> torch.Tensor:
    return torch.arange(rows.start, rows.stop)


def class_ids(run: LoadedRun) -> np.ndarray:
    """Original id (e.g. speciesId) of every class, by class index."""
    return run.store.classes.sort_values("class_index")["original_id"].astype(str).to_numpy()


def _frames(run: LoadedRun, store: TokenStore, data, specs: list[SubsetSpec], species, top_k, req: PredictRequest, device, rows, progress):
    ids_of_class = class_ids(run)
    samples = store.samples
    total, done = (len(rows) if rows is not None else len(data)) * len(specs), 0
    for spec in specs:
        for batch, _, logits in iter_logits(run.model, data, spec.visible, req.batch_size, device, rows):
            probs = probabilities(logits, run.task).numpy().astype(np.float64)
            idx = batch.index.cpu().numpy()
            ids = samples["sample_id"].to_numpy()[idx]
            if req.format == "glc":
                frame = glc_rows(ids, probs, ids_of_class, req.top_k if req.threshold is not None else top_k, req.threshold)
            else:
                head = pd.DataFrame({"sample_id": ids, "lon": samples["lon"].to_numpy()[idx], "lat": samples["lat"].to_numpy()[idx]})
                if len(specs) > 1:
                    head["subset"] = spec.label
                body = species_columns(probs, ids_of_class, species) if species else top_k_columns(probs, ids_of_class, top_k)
                frame = pd.concat([head, body], axis=1)
            done += len(idx)
            if progress:
                progress(done, total)
            yield frame


def _columns(run: LoadedRun, specs, species, top_k, req: PredictRequest) -> list[str]:
    if req.format == "glc":
        return ["surveyId", "predictions"]
    head = ["sample_id", "lon", "lat"] + (["subset"] if len(specs) > 1 else [])
    if species:
        return head + [str(class_ids(run)[k]) for k in species]
    return head + [c for j in range(top_k) for c in (f"species_{j + 1}", f"prob_{j + 1}")]


def _merge(result: PredictResult, req: PredictRequest) -> PredictResult:
    out = result.path
    files = complete_shard_files(shard_dir(out), out.stem, out.suffix, "predict")
    writer = TableWriter(out, "csv" if req.format == "glc" else req.format)
    try:
        for f in files:
            table = read_table(f)
            if len(table):
                writer.write(table)
            result.columns = list(table.columns)
        result.rows = writer.close(result.columns)
    except BaseException:
        writer.abort()
        raise
    return result
