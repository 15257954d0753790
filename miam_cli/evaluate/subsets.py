"""`eval-subsets`: a trained model on every non-empty subset of its modalities, or on selectors.

Each subset is one pass over the split with only its tokens visible; invisible tokens are dropped,
so a small subset costs less than the full input. Shards evaluate slices of the subset list and
write their own file; `merge_shards` joins them into the same table as an unsharded run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.ticker import MaxNLocator

from miam_cli.errors import UserError
from miam_cli.scoring.metrics import MetricSet, metric_names, metric_set
from miam_cli.evaluate.predict import evaluate, group_visibility
from miam_cli.runs.loaded import LoadedRun, open_run
from miam_cli.runs.rundir import RunDir
from miam_cli.evaluate.selectors import all_subsets, resolve_selector, selector_label, subset_label
from miam_cli.shards import Shard, complete_shard_files, is_partial, owned_items, shard_name
from miam_cli.plotstyle import SEQUENTIAL, context, format_values, metric_label, new_figure, save_figure, set_titles, styled, text_colour
from miam_cli.store.atomic import atomic_write, atomic_write_json


@dataclass
class SubsetSpec:
    label: str
    kind: str  # subset | selector
    visible: dict[str, torch.Tensor]  # store modality -> bool [T_m]

    @property
    def modalities(self) -> str:
        return "+".join(m for m, v in self.visible.items() if bool(v.any()))


def subset_specs(run: LoadedRun, requests: list[str] | None) -> list[SubsetSpec]:
    """`all` (default), `unimodal`, and selectors, in the order asked; duplicates removed."""
    groups = list(run.layout.group_names)
    specs: list[SubsetSpec] = []
    for req in requests or ["all"]:
        if req == "all":
            specs += [SubsetSpec(subset_label(s), "subset", group_visibility(run.layout, list(s))) for s in all_subsets(groups)]
        elif req == "unimodal":
            specs += [SubsetSpec(g, "subset", group_visibility(run.layout, g)) for g in groups]
        else:
            masks = resolve_selector(req, run.modality_specs, run.groups)
            label = selector_label(req)
            kind = "subset" if label in {subset_label(s) for s in all_subsets(groups)} else "selector"
            specs.append(SubsetSpec(label, kind, {m: torch.from_numpy(v) for m, v in masks.items() if v.any()}))
    seen, unique = set(), []
    for s in specs:
        if s.label not in seen:
            seen.add(s.label)
            unique.append(s)
    return unique


def run_metrics(run: LoadedRun) -> MetricSet:
    """The metrics the run's task reports (`metric_set`: one place decides)."""
    return metric_set(run.task, run.store.meta.task.num_classes)


def eval_subsets(run: LoadedRun, specs: list[SubsetSpec], split: str = "test", batch_size: int = 1024, device="cpu",
                 progress=None) -> pd.DataFrame:
    data = run.split(split)
    if len(data) == 0:
        raise UserError(f"the {split} split of {run.store.path} is empty")
    rows = []
    for k, spec in enumerate(specs):
        metrics = evaluate(run.model, data, run.task, spec.visible, batch_size, device)
        rows.append({"subset": spec.label, "kind": spec.kind, "modalities": spec.modalities, **metrics,
                     "split": split, "checkpoint": run.which})
        if progress:
            progress(k + 1, len(specs))
    # explicit columns: a shard may get no subset (more shards than subsets) and still writes a readable table
    reported = run_metrics(run)
    table = pd.DataFrame(rows, columns=table_columns(reported.names))
    table.attrs["metrics"] = reported.describe()
    return table


def table_columns(metrics: list[str]) -> list[str]:
    return ["subset", "kind", "modalities", *metrics, "visible_tokens", "samples", "split", "checkpoint"]


# ------------------------------------------------------------------ files
def eval_dir(run_dir: Path) -> Path:
    return RunDir(run_dir).eval_dir


def shard_file(run_dir: Path, split: str, shard: Shard) -> Path:
    return eval_dir(run_dir) / "shards" / shard_name(f"subsets-{split}", shard, ".csv")


def write_table(table: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda p: table.to_csv(p, index=False))


def write_results(run: LoadedRun, table: pd.DataFrame, split: str, plot_format: str = "png") -> Path:
    """subsets.csv + subsets.json (+ a heat map of this split's rows); returns the CSV path.

    Rows already in subsets.csv for other subsets, splits or checkpoints are kept (new rows first):
    evaluating one more selector must not throw away the 2^M - 1 table that attribution reuses.
    """
    out = eval_dir(run.path)
    csv_path = run.rundir.subsets_table
    if csv_path.exists() and len(table):
        old = pd.read_csv(csv_path)
        if len(old):
            key = ["subset", "split", "checkpoint"]
            fresh = set(map(tuple, table[key].astype(str).values))
            kept = old[[tuple(r) not in fresh for r in old[key].astype(str).values]]
            table = pd.concat([table, kept], ignore_index=True) if len(kept) else table
    write_table(table, csv_path)
    atomic_write_json(out / "subsets.json", {"rows": table.replace({np.nan: None}).to_dict("records")})
    shown = table[(table["split"] == split) & (table["checkpoint"] == run.which)]
    if len(shown):
        save_figure(plot_subsets(shown, context(run.path, run.strategy, split, [f"{run.which}.pt"])), out / "subsets", plot_format)
    return csv_path


def merge_shards(run_dir: Path, split: str, order: list[str]) -> pd.DataFrame:
    files = complete_shard_files(eval_dir(run_dir) / "shards", f"subsets-{split}", ".csv", "eval-subsets")
    tables = [pd.read_csv(f) for f in files]
    table = pd.concat([t for t in tables if len(t)] or tables[:1], ignore_index=True)  # empty shards add nothing
    rank = {label: i for i, label in enumerate(order)}
    return table.sort_values("subset", key=lambda s: s.map(lambda x: rank.get(x, len(rank)))).reset_index(drop=True)


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The metrics in a table with a value (counts such as `auc_classes` aside), in the table's order."""
    return [c for c in metric_names(table.columns) if not c.endswith("_classes") and table[c].notna().any()]


@styled
def plot_subsets(table: pd.DataFrame, subtitle: str = ""):
    """A heat map: inputs (rows) x metrics (columns), each metric on its own colour scale with a
    labelled colour bar (AUC and recall@25 live on different ranges: one scale would flatten one)."""
    metrics = metric_columns(table)
    labels = [str(s) for s in table["subset"]]
    label_inches = 0.07 * max(len(s) for s in labels)  # TaxaBench's 5-modality labels run to 44 characters
    fig = new_figure(1.0 + label_inches + 1.25 * len(metrics), 1.6 + 0.3 * len(table))
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        values = table[metric].to_numpy(dtype=float)[:, None]
        finite = values[np.isfinite(values)]
        image = ax.imshow(values, aspect="auto", cmap=SEQUENTIAL, vmin=finite.min() if finite.size else 0,
                          vmax=finite.max() if finite.size else 1)
        texts = format_values(values.ravel())
        for i, v in enumerate(values.ravel()):
            colour = text_colour(image.cmap(image.norm(v))) if np.isfinite(v) else "black"
            ax.text(0, i, texts[i], ha="center", va="center", fontsize=8, color=colour)
        ax.set_xticks([])
        ax.tick_params(left=False)
        ax.set_title(metric_label(metric))
        bar = fig.colorbar(image, ax=ax, location="bottom", aspect=12, pad=0.02)
        bar.set_label(metric_label(metric))
        bar.ax.tick_params(labelsize=7)
        bar.ax.xaxis.set_major_locator(MaxNLocator(3))
        for spine in ax.spines.values():
            spine.set_visible(False)
    axes[0].set_yticks(range(len(labels)), labels)
    axes[0].set_ylabel("visible input (subset or selector)")
    set_titles(fig, "Metrics with only part of the input visible", subtitle)
    return fig


def run_eval_subsets(run_dir: Path | LoadedRun, split: str = "test", checkpoint: str = "best", subsets: list[str] | None = None,
                     shard: tuple[int, int] | None = None, merge: bool = False, batch_size: int = 1024, device="cpu",
                     progress=None, plot_format: str = "png") -> tuple[pd.DataFrame, Path]:
    """The library function behind the command (a run dir, or a run already opened); returns the table and the file written."""
    run = run_dir if isinstance(run_dir, LoadedRun) else open_run(run_dir, checkpoint, device)
    run_dir = run.path
    specs = subset_specs(run, subsets)
    if merge:
        table = merge_shards(run_dir, split, [s.label for s in specs])
        table.attrs["metrics"] = run_metrics(run).describe()
        return table, write_results(run, table, split, plot_format)
    if is_partial(shard):
        table = eval_subsets(run, owned_items(specs, shard), split, batch_size, device, progress)
        path = shard_file(run_dir, split, shard)
        write_table(table, path)
        return table, path
    table = eval_subsets(run, specs, split, batch_size, device, progress)
    return table, write_results(run, table, split, plot_format)


def table_records(table: pd.DataFrame) -> list[dict]:
    return json.loads(table.to_json(orient="records"))
