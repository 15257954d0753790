"""`compare`: the paper's Table 1 — strategies (rows) x input subsets (columns), with the average.

Runs of the same strategy (e.g. several seeds) form one row with mean and standard deviation.
A run trained on fewer masking modalities than the widest run is an *oracle*: it fills only the
column of exactly its own inputs, and all oracles share one row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from miam_cli.errors import UserError
from miam_cli.evaluate.metrics import primary_metric
from miam_cli.store.atomic import atomic_write, atomic_write_text

ORACLE = "oracle"


def run_info(run_dir: Path, split: str = "test") -> dict:
    run_dir = Path(run_dir)
    table_path = run_dir / "eval" / "subsets.csv"
    if not table_path.exists():
        raise UserError(f"{run_dir}: no eval/subsets.csv; run `miam eval-subsets {run_dir}` first")
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    table = pd.read_csv(table_path)
    if "split" in table.columns:
        table = table[table["split"] == split]
        if "checkpoint" in table.columns and (table["checkpoint"] == "best").any():
            table = table[table["checkpoint"] == "best"]
        if table.empty:
            raise UserError(f"{run_dir}: eval/subsets.csv has no rows for split {split!r}")
    groups = recipe.get("modalities")
    return {"run": run_dir, "strategy": recipe["masking"]["strategy"], "table": table, "groups": groups}


def compare_runs(run_dirs: list[Path], subsets: list[str] | None = None, metric: str | None = None,
                 split: str = "test") -> pd.DataFrame:
    """Long table: one row per (label, subset) with mean, std, runs."""
    infos = [run_info(r, split) for r in run_dirs]
    metric = metric or _default_metric(infos)
    widest = max(len(i["table"].query("kind == 'subset'")["subset"].map(lambda s: s.split("+")).explode().unique()) for i in infos)
    records = []
    for info in infos:
        table = info["table"]
        full = table.loc[table["kind"] == "subset", "subset"]
        n_groups = len(set("+".join(full).split("+"))) if len(full) else 0
        if metric not in table.columns:
            raise UserError(f"{info['run']}: no metric {metric!r} in eval/subsets.csv (has {', '.join(table.columns)})")
        if n_groups < widest:  # an oracle: only its own full input counts
            own = max(full, key=lambda s: len(s.split("+")))
            records.append({"label": ORACLE, "run": str(info["run"]), "subset": own, "value": float(table.set_index("subset").loc[own, metric])})
            continue
        for _, row in table.iterrows():
            records.append({"label": info["strategy"], "run": str(info["run"]), "subset": row["subset"], "value": float(row[metric])})
    long = pd.DataFrame(records)
    if subsets:
        long = long[long["subset"].isin(subsets)]
        if long.empty:
            raise UserError(f"none of the runs has the subsets {', '.join(subsets)}")
    agg = long.groupby(["label", "subset"], sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    agg.attrs["metric"] = metric
    return agg


def _default_metric(infos: list[dict]) -> str:
    cols = infos[0]["table"].columns
    return primary_metric("multilabel" if "auc" in cols else "multiclass")


def wide_table(agg: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(means, stds) with rows = labels, columns = subsets in first-seen order + 'average'."""
    columns = list(dict.fromkeys(agg["subset"]))
    rows = list(dict.fromkeys(agg["label"]))
    if ORACLE in rows:  # the paper puts the oracle last
        rows = [r for r in rows if r != ORACLE] + [ORACLE]
    mean = agg.pivot(index="label", columns="subset", values="mean").reindex(index=rows, columns=columns)
    std = agg.pivot(index="label", columns="subset", values="std").reindex(index=rows, columns=columns)
    mean["average"] = mean[columns].mean(axis=1, skipna=False)
    std["average"] = np.nan
    return mean, std, columns + ["average"]


def best_per_column(mean: pd.DataFrame) -> dict[str, str]:
    """The best non-oracle row per column (the paper marks the best strategy, the oracle is a reference)."""
    rows = mean.drop(index=ORACLE, errors="ignore")
    return {c: rows[c].idxmax() for c in mean.columns if rows[c].notna().any()}


def format_cell(m: float, s: float, best: bool, markdown: bool) -> str:
    if not np.isfinite(m):
        return "–"
    text = f"{100 * m:.1f}" + (f" ± {100 * s:.1f}" if np.isfinite(s) else "")
    return f"**{text}**" if best and markdown else (text + " *" if best else text)


def write_compare(agg: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    mean, std, columns = wide_table(agg)
    best = best_per_column(mean)
    out_dir = Path(out_dir)
    flat = mean.add_suffix("_mean").join(std.add_suffix("_std"))
    atomic_write(out_dir / "compare.csv", lambda p: flat.to_csv(p, index_label="strategy"))
    lines = [f"| strategy | {' | '.join(columns)} |", "| --- |" + " --- |" * len(columns)]
    for label in mean.index:
        cells = [format_cell(mean.loc[label, c], std.loc[label, c], best.get(c) == label, True) for c in columns]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    metric = agg.attrs.get("metric", "metric")
    note = f"\n{metric} × 100, mean ± std over runs of the same strategy; best strategy per column in bold; oracle = models trained on that input alone.\n"
    atomic_write_text(out_dir / "compare.md", "\n".join(lines) + "\n" + note)
    return out_dir / "compare.csv", out_dir / "compare.md"
