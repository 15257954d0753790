"""`miam compare`: the library function behind the command. Table 1 (strategies x inputs, written as
compare.csv and compare.md) and, with a reference row, the paired comparison (paired.csv and .md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from miam_cli.evaluate.compare import best_per_column, compare_runs, wide_table, write_compare
from miam_cli.evaluate.paired import PairedComparison, paired_comparison, write_paired


@dataclass
class CompareResult:
    long: pd.DataFrame  # one row per (strategy, subset): mean, std, count; attrs: metric, warnings
    mean: pd.DataFrame  # strategies x subsets (+ average)
    std: pd.DataFrame
    columns: list[str]
    best: dict[str, str]  # column -> the best (non-oracle) strategy
    files: list[Path]  # compare.csv, compare.md (+ paired.csv, paired.md)
    paired: PairedComparison | None = None

    @property
    def metric(self) -> str:
        return self.long.attrs["metric"]

    @property
    def warnings(self) -> list[str]:
        return self.long.attrs["warnings"]


def run_compare(run_dirs: list[Path], subsets: list[str] | None = None, metric: str | None = None, split: str = "test",
                out_dir: Path = Path("compare"), paired: str | None = None) -> CompareResult:
    """Runs' eval/subsets.csv side by side; `paired`: also that row minus every other, seed by seed."""
    long = compare_runs(run_dirs, subsets, metric, split)
    files = list(write_compare(long, out_dir))
    mean, std, columns = wide_table(long)
    result = CompareResult(long, mean, std, columns, best_per_column(mean), files)
    if paired:
        result.paired = paired_comparison(run_dirs, paired, subsets, None, metric, split)
        result.files += write_paired(result.paired, out_dir)
    return result
