"""`compare`: the paper's Table 1 — strategies (rows) x input subsets (columns), with the average.

Runs of the same strategy (e.g. several seeds) form one row with mean and standard deviation.
Runs of one strategy whose recipes differ in more than the seed (an ablation: `masking.kappa=30`)
get separate rows, labelled with the differing keys, e.g. `miam (masking.kappa=30)`.
An *oracle* (a run trained with `--oracle GROUP`, or any run trained on fewer masking modalities
than the widest run) fills only the column of exactly its own inputs, and all oracles share one row.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from miam_cli.runs.rundir import RunDir, run_recipe
from miam_cli.errors import UserError
from miam_cli.files import writable_folder
from miam_cli.scoring.metrics import primary_metric
from miam_cli.store.atomic import atomic_write, atomic_write_text

ORACLE = "oracle"
# recipe keys that tell runs apart without making them different configurations
NOT_A_VARIANT = ("train.seed", "name", "oracle")  # oracles get their own row


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "modalities":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def variant_labels(infos: list[dict]) -> list[str]:
    """The strategy name, plus `(key=value, …)` for the recipe keys (seeds and names aside) where a
    run differs from the other runs of its strategy, so that ablations do not pool into one row. A
    value held by most of those runs (the baseline configuration) is not spelled out."""
    values = [{k: v for k, v in _flatten(i["recipe"]).items() if k not in NOT_A_VARIANT} for i in infos]
    flat = [{k: json.dumps(v, sort_keys=True, default=str) for k, v in vals.items()} for vals in values]
    labels = []
    for info, mine, shown in zip(infos, flat, values):
        peers = [f for f, other in zip(flat, infos) if other["strategy"] == info["strategy"] and other["groups"] == info["groups"]]
        extra = []
        for key in sorted(set().union(*peers)):
            counts = Counter(p.get(key) for p in peers)
            if len(counts) == 1:
                continue
            (top, n_top), *rest = counts.most_common()
            if mine.get(key) != top or (rest and rest[0][1] == n_top):  # not the majority's value, or no majority
                extra.append(f"{key}={shown.get(key)}")
        labels.append(f"{info['strategy']} ({', '.join(extra)})" if extra else info["strategy"])
    return labels


def run_info(run_dir: Path, split: str = "test") -> dict:
    run_dir = Path(run_dir)
    table_path = RunDir(run_dir).subsets_table
    if not table_path.exists():
        raise UserError(f"{run_dir}: no eval/subsets.csv; run `miam eval-subsets {run_dir}` first")
    recipe = run_recipe(run_dir)
    masking = recipe.get("masking", {})
    if "lam" in masking:  # labels use the key users write (`masking.lambda=2`), not the field name
        masking["lambda"] = masking.pop("lam")
    table = pd.read_csv(table_path)
    if "split" in table.columns:
        table = table[table["split"] == split]
        if "checkpoint" in table.columns and (table["checkpoint"] == "best").any():
            table = table[table["checkpoint"] == "best"]
        if table.empty:
            raise UserError(f"{run_dir}: eval/subsets.csv has no rows for split {split!r}")
    groups = recipe.get("modalities")
    seed = (recipe.get("train") or {}).get("seed", 0)
    return {"run": run_dir, "strategy": recipe["masking"]["strategy"], "table": table, "groups": groups, "recipe": recipe,
            "seed": seed, "oracle": bool(recipe.get("oracle"))}


def compare_runs(run_dirs: list[Path], subsets: list[str] | None = None, metric: str | None = None,
                 split: str = "test", per_run: bool = False, labels: dict | None = None) -> pd.DataFrame:
    """Long table: one row per (label, subset) with mean, std, runs; with `per_run`, one row per
    (label, run, seed, subset) with its value instead (for paired comparisons across seeds).
    `labels` (run dir -> row name) names rows instead of the recipe differences (oracles stay oracles).

    Only the columns every (non-oracle) run has are averaged, so that each row's average is over
    the same inputs; what was left out is listed in ``attrs["warnings"]``."""
    infos = [run_info(r, split) for r in run_dirs]
    metric = metric or _default_metric(infos)
    widest = max(len(i["table"].query("kind == 'subset'")["subset"].map(lambda s: s.split("+")).explode().unique()) for i in infos)
    names = variant_labels(infos)
    if labels:
        names = [labels.get(str(i["run"]), name) for i, name in zip(infos, names)]
    records = []
    for info, label in zip(infos, names):
        table = info["table"]
        full = table.loc[table["kind"] == "subset", "subset"]
        n_groups = len(set("+".join(full).split("+"))) if len(full) else 0
        if metric not in table.columns:
            raise UserError(f"{info['run']}: no metric {metric!r} in eval/subsets.csv (has {', '.join(table.columns)})")
        if info["oracle"] or 0 < n_groups < widest:  # an oracle: only its own full input counts
            own = max(full, key=lambda s: len(s.split("+")))
            records.append({"label": ORACLE, "run": str(info["run"]), "seed": info["seed"], "subset": own,
                            "value": float(table.set_index("subset").loc[own, metric])})
            continue
        for _, row in table.iterrows():
            records.append({"label": label, "run": str(info["run"]), "seed": info["seed"], "subset": row["subset"],
                            "value": float(row[metric])})
    long = pd.DataFrame(records)
    if subsets:
        long = long[long["subset"].isin(subsets)]
        if long.empty:
            raise UserError(f"none of the runs has the subsets {', '.join(subsets)}")
    if per_run:
        long.attrs["metric"] = metric
        return long
    long, warnings = shared_columns(long)
    agg = long.groupby(["label", "subset"], sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    agg.attrs["metric"] = metric
    agg.attrs["warnings"] = warnings
    return agg


def shared_columns(long: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep the subsets every non-oracle run was evaluated on (an oracle keeps its column if shared),
    with one warning per run that had more or fewer. No shared column at all is a UserError."""
    runs = long[long["label"] != ORACLE].groupby("run", sort=False)["subset"].agg(lambda s: list(dict.fromkeys(s)))
    if runs.empty:
        return long, []
    shared = set.intersection(*(set(v) for v in runs))
    union = list(dict.fromkeys(s for v in runs for s in v))
    if not shared:
        have = "; ".join(f"{run}: {', '.join(v)}" for run, v in runs.items())
        raise UserError(f"the runs share no evaluated input ({have}); run `miam eval-subsets RUN_DIR` on each "
                        "(all subsets by default) and compare again")
    warnings = []
    for run, cols in runs.items():
        missing = [c for c in union if c not in cols]
        if missing:
            warnings.append(f"{run} was not evaluated on {', '.join(missing)} (run `miam eval-subsets {run}"
                            + "".join(f" --subsets '{c}'" for c in missing[:3]) + (" ..." if len(missing) > 3 else "") + "`)")
    dropped = [c for c in union if c not in shared]
    if dropped:
        warnings.append(f"left out {len(dropped)} column(s) not evaluated on every run: {', '.join(dropped)}")
    oracle_dropped = sorted(set(long.loc[(long["label"] == ORACLE) & ~long["subset"].isin(shared), "subset"]))
    if oracle_dropped:
        warnings.append(f"left out the oracle column(s) {', '.join(oracle_dropped)}: not evaluated on every run")
    return long[long["subset"].isin(shared)], warnings


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
    """The best non-oracle row per column (the paper marks the best strategy, the oracle is a reference).
    Rows without a value there are no candidates: no "best average" for a row with missing inputs."""
    rows = mean.drop(index=ORACLE, errors="ignore")
    return {c: rows[c].idxmax() for c in mean.columns if rows[c].notna().any()}


def format_cell(m: float, s: float, best: bool, markdown: bool) -> str:
    if not np.isfinite(m):
        return "–"
    text = f"{100 * m:.1f}" + (f" ± {_spread(100 * s)}" if np.isfinite(s) else "")
    return f"**{text}**" if best and markdown else (text + " *" if best else text)


def _spread(s: float) -> str:
    """One decimal, or one significant digit when that would print a non-zero spread as 0.0."""
    return f"{s:.1g}" if 0 < abs(s) < 0.05 else f"{s:.1f}"


def caption(agg: pd.DataFrame, markdown: bool) -> str:
    """What the table shows, saying only what is there: a spread only when a row pools several runs,
    the oracle only when there is one."""
    metric = agg.attrs.get("metric", "metric")
    parts = [f"{metric} × 100"]
    pooled = agg["count"].max() if len(agg) else 1
    if pooled > 1:
        parts.append(f"mean ± std over the runs of a row (up to {pooled})")
    else:
        parts.append("one run per row")
    parts.append("best strategy per column in bold" if markdown else "* = best strategy per column")
    if (agg["label"] == ORACLE).any():
        parts.append("oracle = models trained on that input alone")
    return "; ".join(parts) + "."


def write_compare(agg: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    mean, std, columns = wide_table(agg)
    best = best_per_column(mean)
    out_dir = writable_folder(Path(out_dir), "--out folder")
    flat = mean.add_suffix("_mean").join(std.add_suffix("_std"))
    atomic_write(out_dir / "compare.csv", lambda p: flat.to_csv(p, index_label="strategy"))
    lines = [f"| strategy | {' | '.join(columns)} |", "| --- |" + " --- |" * len(columns)]
    for label in mean.index:
        cells = [format_cell(mean.loc[label, c], std.loc[label, c], best.get(c) == label, True) for c in columns]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    notes = "".join(f"\n> {w}\n" for w in agg.attrs.get("warnings", []))
    atomic_write_text(out_dir / "compare.md", "\n".join(lines) + "\n\n" + caption(agg, True) + "\n" + notes)
    return out_dir / "compare.csv", out_dir / "compare.md"
