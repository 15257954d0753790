"""Attribution reports: a CSV, a JSON, a plot and a Markdown summary per Shapley result.

Plot kinds: ``bars`` (modalities, bands, variables), ``line`` (years), ``heatmap`` (patches on
their rows × cols grid, players named ``r<row>c<col>``).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from miam_cli.store.atomic import atomic_write_bytes, json_default
from miam_cli.attribution.estimators import ShapleyResult, budget_for_errors

KINDS = ("bars", "line", "heatmap")
METHOD_NAMES = {"exact": "exact (all coalitions)", "permutation": "antithetic permutation sampling",
                "kernel": "paired KernelSHAP (Covert & Lee 2021) with coalition-size effects"}
Z95 = 1.96
CSV_COLUMNS = ["player", "axis_value", "phi", "std_error", "evaluations"]
TOP_PLAYERS = 5
# Relative size of Σφ − (v(all) − v(none)) under which efficiency counts as satisfied: exact
# values and whole permutations both telescope, and KernelSHAP imposes it, so only rounding is left.
EFFICIENCY_RTOL = 1e-6


def efficiency_check(result: ShapleyResult) -> dict:
    total = float(result.v_all - result.v_none)
    gap = result.efficiency_gap
    return {
        "sum_phi": float(result.values.sum()),
        "v_all_minus_v_none": total,
        "gap": gap,
        "ok": abs(gap) <= EFFICIENCY_RTOL * max(1.0, abs(total)),
    }


def write_report(
    result: ShapleyResult,
    out_dir: str | Path,
    stem: str,
    kind: str,
    axis_values: Sequence[Any] | None = None,
    grid: tuple[int, int] | None = None,
    title: str | None = None,
    meta: Mapping[str, Any] | None = None,
    summary_file: str | None = "summary.md",
) -> str:
    """Write ``<stem>.csv``, ``<stem>.json`` and ``<stem>.png`` into ``out_dir``; append the
    Markdown summary to ``out_dir/summary_file`` (unless None) and return it."""
    if kind not in KINDS:
        raise ValueError(f"plot kind {kind!r} is not one of {', '.join(KINDS)}")
    axis = list(result.players) if axis_values is None else list(axis_values)
    if len(axis) != len(result.players):
        raise ValueError(f"{len(axis)} axis values for {len(result.players)} players")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or stem
    meta = dict(meta or {})

    atomic_write_bytes(out / f"{stem}.csv", _csv_text(result, axis).encode())
    document = {"title": title, "kind": kind, "meta": meta, "efficiency": efficiency_check(result),
                "result": result.to_dict(), "axis_values": axis}
    atomic_write_bytes(out / f"{stem}.json", json.dumps(document, indent=2, default=json_default).encode())
    atomic_write_bytes(out / f"{stem}.png", _plot_png(result, kind, axis, grid, title))

    summary = markdown_summary(result, title, f"{stem}.png")
    if summary_file is not None:
        with open(out / summary_file, "a", encoding="utf-8") as fh:
            fh.write(summary + "\n")
    return summary


def markdown_summary(result: ShapleyResult, title: str, image: str | None = None) -> str:
    check = efficiency_check(result)
    order = np.argsort(-result.values)[:TOP_PLAYERS]
    method = METHOD_NAMES.get(result.method, result.method)
    finite = result.std_errors[np.isfinite(result.std_errors)]
    status = "converged" if result.converged else "not converged (budget spent)"
    lines = [
        f"### {title}",
        "",
        f"- Method: {method}; {evaluation_count(result)}; {status}.",
        "- Top players: " + ", ".join(
            f"**{result.players[i]}** {_pm(result.values[i], result.std_errors[i])}" for i in order
        ) + ".",
        f"- Efficiency: Σφ = {check['sum_phi']:.6g}, v(all) − v(none) = "
        f"{check['v_all_minus_v_none']:.6g}, gap {check['gap']:.2g} ({'ok' if check['ok'] else 'FAILED'}).",
        f"- Standard errors: largest {finite.max():.3g}, median {np.median(finite):.3g}." if finite.size == len(result.players)
        else f"- Standard errors: **unknown**. {too_few_coalitions(result)}",
    ]
    if image:
        lines += ["", f"![{title}]({image})"]
    return "\n".join(lines) + "\n"


def evaluation_count(result: ShapleyResult) -> str:
    """Coalitions evaluated here, and those reused from eval-subsets, counted apart."""
    done = f"{result.evaluations:,} coalition{'s' if result.evaluations != 1 else ''} evaluated"
    return done + (f", {result.reused:,} reused from eval/subsets.csv" if result.reused else "")


def too_few_coalitions(result: ShapleyResult) -> str:
    """Why some standard errors are infinite, and what budget cures it."""
    p = len(result.players)
    why = (f"cannot tell the {p} players apart, so the values are a least-norm fit" if result.method == "kernel"
           else "buy fewer than two sample pairs")
    return f"{result.evaluations:,} coalition evaluations {why}; rerun with --budget {budget_for_errors(result.method, p)} or more."


def _pm(value: float, se: float) -> str:
    return f"{value:.4g}" if se == 0 else f"{value:.4g} ± {se:.2g}"


def _csv_text(result: ShapleyResult, axis: list) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record, axis_value in zip(result.to_records(), axis):
        writer.writerow({**record, "axis_value": axis_value})
    return buf.getvalue()


def _plot_png(result: ShapleyResult, kind: str, axis: list, grid, title: str) -> bytes:
    # A bare Figure with the Agg canvas: no pyplot global state, no display needed.
    fig = Figure(figsize=_figsize(kind, len(axis)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    {"bars": _bars, "line": _line, "heatmap": _heatmap}[kind](fig, ax, result, axis, grid)
    ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _figsize(kind: str, n: int) -> tuple[float, float]:
    if kind == "bars":
        return (6.5, 1.5 + 0.3 * n)
    return (7.0, 4.0) if kind == "line" else (6.0, 5.0)


def _errors(result: ShapleyResult) -> np.ndarray:
    """95% half-widths; unknown errors (a single sample) are drawn as none."""
    return np.nan_to_num(Z95 * result.std_errors, nan=0.0, posinf=0.0)


def _bars(fig, ax, result: ShapleyResult, axis: list, grid) -> None:
    order = np.argsort(result.values)  # largest ends on top of a horizontal bar chart
    err = _errors(result)[order]
    ax.barh([str(axis[i]) for i in order], result.values[order],
            xerr=err if err.any() else None, capsize=3,
            color=np.where(result.values[order] >= 0, "tab:blue", "tab:red"))
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("Shapley value φ" + (" (±1.96 SE)" if err.any() else ""))


def _line(fig, ax, result: ShapleyResult, axis: list, grid) -> None:
    x = np.asarray(axis, dtype=float)  # years, so the axis must be numeric
    order = np.argsort(x)
    x, y, err = x[order], result.values[order], _errors(result)[order]
    ax.plot(x, y, marker="o")
    if err.any():
        ax.fill_between(x, y - err, y + err, alpha=0.25, label="±1.96 SE")
        ax.legend()
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("Shapley value φ")


def _heatmap(fig, ax, result: ShapleyResult, axis: list, grid) -> None:
    if grid is None:
        raise ValueError("a heatmap needs grid=(rows, cols)")
    cells = patch_grid(result.players, result.values, grid)
    bound = float(np.nanmax(np.abs(cells))) or 1.0
    image = ax.imshow(cells, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -bound, bound))
    fig.colorbar(image, ax=ax, label="Shapley value φ")
    if cells.size <= 144:  # numbers stay legible on small grids only
        for (r, c), v in np.ndenumerate(cells):
            if np.isfinite(v):
                ax.text(c, r, f"{v:.2g}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(grid[1]))
    ax.set_yticks(range(grid[0]))
    ax.set_xlabel("column")
    ax.set_ylabel("row")


_CELL = re.compile(r"r(\d+)c(\d+)")


def patch_grid(players: Sequence[str], values: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """φ placed on the (rows, cols) grid by player names ``r<i>c<j>``; cells without a player
    stay NaN."""
    rows, cols = grid
    cells = np.full((rows, cols), np.nan)
    for name, value in zip(players, values):
        match = _CELL.fullmatch(str(name))
        if match is None:
            raise ValueError(f"patch player {name!r} is not named r<row>c<col>")
        r, c = int(match[1]), int(match[2])
        if not (r < rows and c < cols):
            raise ValueError(f"patch {name!r} lies outside the {rows}×{cols} grid")
        cells[r, c] = value
    return cells
