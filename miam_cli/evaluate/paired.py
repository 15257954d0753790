"""Paired comparisons across seeds: does one strategy beat another, or is it a tie?

Runs of two strategies trained with the same seeds share the data order, the initial weights and
the split; the seed-to-seed spread of either strategy's score (about a point here) mostly cancels in
their per-seed difference. So the question "is MIAM better than dropout on the average?" is answered
by the mean of the per-seed differences with a Student-t 95% confidence interval:

    Δ_s = score(reference, seed s) − score(other, seed s)        for every seed both have
    Δ̄ ± t_{0.975, n−1} · sd(Δ) / √n

and the verdict is `better` when the interval lies above 0, `worse` below 0, `tie` otherwise (with
one seed there is no interval: `n/a`). The average is each run's own mean over the columns compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from miam_cli.errors import UserError
from miam_cli.evaluate.compare import ORACLE, compare_runs
from miam_cli.store.atomic import atomic_write, atomic_write_text

AVERAGE = "average"


@dataclass
class PairedCell:
    """Reference minus other on one column, over the seeds both have."""

    mean: float
    low: float
    high: float
    seeds: int
    differences: list[float] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.seeds < 2 or not np.isfinite(self.low):
            return "n/a"
        return "better" if self.low > 0 else "worse" if self.high < 0 else "tie"


@dataclass
class PairedComparison:
    reference: str
    metric: str
    columns: list[str]
    rows: dict[str, dict[str, PairedCell]]  # other label -> column -> cell

    def table(self) -> pd.DataFrame:
        records = [{"reference": self.reference, "other": other, "column": c, "mean_difference": cell.mean,
                    "ci_low": cell.low, "ci_high": cell.high, "seeds": cell.seeds, "verdict": cell.verdict,
                    "per_seed": " ".join(f"{d:+.4f}" for d in cell.differences)}
                   for other, cells in self.rows.items() for c, cell in cells.items()]
        return pd.DataFrame(records)


def interval(differences: list[float], level: float = 0.95) -> PairedCell:
    d = np.asarray(differences, dtype=float)
    n = len(d)
    if n == 0:
        return PairedCell(np.nan, np.nan, np.nan, 0)
    mean = float(d.mean())
    if n < 2:
        return PairedCell(mean, np.nan, np.nan, n, d.tolist())
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / np.sqrt(n))
    return PairedCell(mean, mean - half, mean + half, n, d.tolist())


def per_seed_scores(run_dirs: list[Path], columns: list[str] | None = None, metric: str | None = None,
                    split: str = "test", labels: dict | None = None) -> tuple[pd.DataFrame, str]:
    """Wide table: rows (label, seed), one column per subset plus `average` (over `columns`, or over
    every subset all non-oracle runs share). Oracles are left out: they have one column each.
    `labels`: run dir -> row name, as in `compare_runs`."""
    agg = compare_runs(run_dirs, None, metric, split, per_run=True, labels=labels)
    long = agg[agg["label"] != ORACLE]
    wide = long.pivot_table(index=["label", "seed"], columns="subset", values="value", aggfunc="first")
    wide = wide[list(dict.fromkeys(long["subset"]))]  # first-seen order, as compare's table
    shared = [c for c in dict.fromkeys(long["subset"]) if wide[c].notna().all()]
    columns = columns or shared
    missing = [c for c in columns if c not in wide.columns]
    if missing:
        raise UserError(f"no run has the column(s) {', '.join(missing)}; they have {', '.join(wide.columns)}")
    wide[AVERAGE] = wide[columns].mean(axis=1, skipna=False)
    return wide, agg.attrs["metric"]


def paired_comparison(run_dirs: list[Path], reference: str, columns: list[str] | None = None,
                      report: list[str] | None = None, metric: str | None = None, split: str = "test",
                      labels: dict | None = None) -> PairedComparison:
    """Per-seed differences `reference − other` for every other label, with 95% intervals, on
    `report` columns (default: the average and every single-modality subset)."""
    wide, metric = per_seed_scores(run_dirs, columns, metric, split, labels)
    labels = list(dict.fromkeys(wide.index.get_level_values("label")))
    if reference not in labels:
        raise UserError(f"--paired {reference!r}: no such row; the rows are {', '.join(labels)}")
    if report is None:
        report = [AVERAGE] + [c for c in wide.columns if c != AVERAGE and "+" not in c and "[" not in c]
    ref = wide.loc[reference]
    rows = {}
    for other in labels:
        if other == reference:
            continue
        theirs = wide.loc[other]
        seeds = sorted(set(ref.index) & set(theirs.index))
        rows[other] = {c: interval([float(ref.loc[s, c] - theirs.loc[s, c]) for s in seeds
                                    if np.isfinite(ref.loc[s, c] - theirs.loc[s, c])]) for c in report}
    return PairedComparison(reference, metric, report, rows)


def format_paired_cell(cell: PairedCell, markdown: bool = False) -> str:
    if not np.isfinite(cell.mean):
        return "–"
    if cell.seeds < 2:
        return f"{100 * cell.mean:+.1f} (1 seed)"
    text = f"{100 * cell.mean:+.1f} [{100 * cell.low:+.1f}, {100 * cell.high:+.1f}]"
    mark = {"better": "▲", "worse": "▼", "tie": "="}[cell.verdict]
    return f"{text} {mark}"


def write_paired(result: PairedComparison, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    atomic_write(out_dir / "paired.csv", lambda p: result.table().to_csv(p, index=False))
    lines = [f"| {result.reference} minus | {' | '.join(result.columns)} |", "| --- |" + " --- |" * len(result.columns)]
    for other, cells in result.rows.items():
        lines.append(f"| {other} | {' | '.join(format_paired_cell(cells[c], True) for c in result.columns)} |")
    seeds = sorted({cell.seeds for cells in result.rows.values() for cell in cells.values()})
    lines.append(f"\n{result.metric} × 100: mean of the per-seed differences [95% t-interval] over "
                 f"{'/'.join(map(str, seeds))} paired seeds; ▲ {result.reference} better, ▼ worse, = tie "
                 "(the interval contains 0).\n")
    atomic_write_text(out_dir / "paired.md", "\n".join(lines))
    return out_dir / "paired.csv", out_dir / "paired.md"
