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

from miam_cli.errors import UserError
from miam_cli.evaluate.predict import evaluate, group_visibility
from miam_cli.evaluate.run import LoadedRun, open_run
from miam_cli.evaluate.selectors import all_subsets, resolve_selector, selector_label, subset_label
from miam_cli.store.atomic import atomic_write, atomic_write_json
from miam_cli.store.writer import complete_shard_files


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


def shard_slice(items: list, shard: tuple[int, int]) -> list:
    i, n = shard
    return items[i::n]


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
    return pd.DataFrame(rows, columns=table_columns(run.task))


def table_columns(task: str) -> list[str]:
    metrics = ["auc", "auc_classes", "f1_25", "recall_25"] if task == "multilabel" else ["top1", "top5"]
    return ["subset", "kind", "modalities", *metrics, "visible_tokens", "samples", "split", "checkpoint"]


# ------------------------------------------------------------------ files
def eval_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "eval"


def shard_file(run_dir: Path, split: str, shard: tuple[int, int]) -> Path:
    return eval_dir(run_dir) / "shards" / f"subsets-{split}-{shard[0]:03d}-of-{shard[1]:03d}.csv"


def write_table(table: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda p: table.to_csv(p, index=False))


def write_results(run_dir: Path, table: pd.DataFrame) -> Path:
    """subsets.csv + subsets.json (+ a heat map); returns the CSV path.

    Rows already in subsets.csv for other subsets, splits or checkpoints are kept (new rows first):
    evaluating one more selector must not throw away the 2^M - 1 table that attribution reuses.
    """
    out = eval_dir(run_dir)
    csv_path = out / "subsets.csv"
    if csv_path.exists() and len(table):
        old = pd.read_csv(csv_path)
        if len(old):
            key = ["subset", "split", "checkpoint"]
            fresh = set(map(tuple, table[key].astype(str).values))
            kept = old[[tuple(r) not in fresh for r in old[key].astype(str).values]]
            table = pd.concat([table, kept], ignore_index=True) if len(kept) else table
    write_table(table, csv_path)
    atomic_write_json(out / "subsets.json", {"rows": table.replace({np.nan: None}).to_dict("records")})
    plot_subsets(table, out / "subsets.png")
    return csv_path


def merge_shards(run_dir: Path, split: str, order: list[str]) -> pd.DataFrame:
    files = complete_shard_files(eval_dir(run_dir) / "shards", f"subsets-{split}-*-of-*.csv", "eval-subsets")
    tables = [pd.read_csv(f) for f in files]
    table = pd.concat([t for t in tables if len(t)] or tables[:1], ignore_index=True)  # empty shards add nothing
    rank = {label: i for i, label in enumerate(order)}
    return table.sort_values("subset", key=lambda s: s.map(lambda x: rank.get(x, len(rank)))).reset_index(drop=True)


def plot_subsets(table: pd.DataFrame, path: Path) -> None:
    """A heat map: subsets (rows) x metrics (columns), coloured by value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [c for c in ("auc", "f1_25", "recall_25", "top1", "top5") if c in table.columns]
    values = table[metrics].to_numpy(dtype=float)
    label_inches = 0.075 * max(len(str(s)) for s in table["subset"])  # TaxaBench's 5-modality labels run to 44 characters
    fig, ax = plt.subplots(figsize=(2.2 + 1.2 * len(metrics) + label_inches, 0.8 + 0.35 * len(table)), layout="constrained")
    im = ax.imshow(values, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_yticks(range(len(table)), table["subset"])
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{v:.3f}", ha="center", va="center", color="w" if v < np.nanmean(values) else "k", fontsize=8)
    fig.colorbar(im, ax=ax)
    ax.set_title("metric by input subset")
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def run_eval_subsets(run_dir: Path | LoadedRun, split: str = "test", checkpoint: str = "best", subsets: list[str] | None = None,
                     shard: tuple[int, int] | None = None, merge: bool = False, batch_size: int = 1024, device="cpu",
                     progress=None) -> tuple[pd.DataFrame, Path]:
    """The library function behind the command (a run dir, or a run already opened); returns the table and the file written."""
    run = run_dir if isinstance(run_dir, LoadedRun) else open_run(run_dir, checkpoint, device)
    run_dir = run.path
    specs = subset_specs(run, subsets)
    if merge:
        table = merge_shards(run_dir, split, [s.label for s in specs])
        return table, write_results(run_dir, table)
    if shard is not None and shard[1] > 1:
        table = eval_subsets(run, shard_slice(specs, shard), split, batch_size, device, progress)
        path = shard_file(run_dir, split, shard)
        write_table(table, path)
        return table, path
    table = eval_subsets(run, specs, split, batch_size, device, progress)
    return table, write_results(run_dir, table)


def table_records(table: pd.DataFrame) -> list[dict]:
    return json.loads(table.to_json(orient="records"))
