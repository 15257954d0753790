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
from matplotlib.colors import TwoSlopeNorm

from miam_cli import plotstyle
from miam_cli.attribution.estimators import ShapleyResult, budget_for_errors
from miam_cli.store.atomic import atomic_write_bytes, json_default

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
    plot_format: str = "png",
) -> str:
    """Write ``<stem>.csv``, ``<stem>.json`` and the figure ``<stem>.<plot_format>`` into ``out_dir``;
    append the Markdown summary to ``out_dir/summary_file`` (unless None) and return it."""
    if kind not in KINDS:
        raise ValueError(f"plot kind {kind!r} is not one of {', '.join(KINDS)}")
    axis = list(result.players) if axis_values is None else list(axis_values)
    if len(axis) != len(result.players):
        raise ValueError(f"{len(axis)} axis values for {len(result.players)} players")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or stem
    meta = dict(meta or {})
    figure = f"{stem}.{plotstyle.check_format(plot_format)}"

    atomic_write_bytes(out / f"{stem}.csv", _csv_text(result, axis).encode())
    document = {"title": title, "kind": kind, "meta": meta, "efficiency": efficiency_check(result),
                "result": result.to_dict(), "axis_values": axis, "figure": figure}
    atomic_write_bytes(out / f"{stem}.json", json.dumps(document, indent=2, default=json_default).encode())
    plotstyle.save_figure(plot_result(result, kind, axis, grid, title, meta), out / figure, plot_format)

    summary = markdown_summary(result, title, figure)
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


@plotstyle.styled
def plot_result(result: ShapleyResult, kind: str, axis: list, grid, title: str, meta: Mapping[str, Any]):
    """The report's figure: bars (modalities, bands, variables), a line (years) or the patch grid,
    in the target's units, titled with the run, its strategy and the split."""
    scale, units = plotstyle.shapley_units(str(meta.get("target", "")))
    fig = plotstyle.new_figure(*_figsize(kind, len(axis)))
    ax = fig.add_subplot()
    {"bars": _bars, "line": _line, "heatmap": _heatmap}[kind](fig, ax, result, axis, grid, scale, units, meta)
    plotstyle.set_titles(fig, title, plotstyle.context(meta.get("run"), meta.get("strategy"), meta.get("split"),
                                                       [_context_note(meta), _samples_note(meta)]))
    return fig


def _context_note(meta: Mapping[str, Any]) -> str:
    if meta.get("modality") is None or meta.get("context") is None:
        return ""
    return "other modalities " + ("visible" if meta["context"] == "all" else "masked")


def _samples_note(meta: Mapping[str, Any]) -> str:
    return f"{meta['samples']:,} samples" if meta.get("samples") else ""


def _figsize(kind: str, n: int) -> tuple[float, float]:
    if kind == "bars":
        return (6.5, 1.9 + 0.28 * n)
    return (7.0, 4.2) if kind == "line" else (5.6, 5.4)


def _errors(result: ShapleyResult) -> np.ndarray:
    """95% half-widths; unknown errors (a single sample) are drawn as none."""
    return np.nan_to_num(Z95 * result.std_errors, nan=0.0, posinf=0.0)


def _player_label(meta: Mapping[str, Any], fallback: str) -> str:
    """`Sentinel-2 spectral band`-style axis labels: the axis in words, of which modality."""
    axis = plotstyle.AXIS_LABELS.get(str(meta.get("players", "")), fallback)
    return f"{meta['modality']} {axis}" if meta.get("modality") else axis


def _bars(fig, ax, result: ShapleyResult, axis: list, grid, scale: float, units: str, meta) -> None:
    order = np.argsort(result.values)  # largest ends on top of a horizontal bar chart
    values, err = scale * result.values[order], scale * _errors(result)[order]
    ax.barh([str(axis[i]) for i in order], values, xerr=err if err.any() else None, capsize=3,
            color=np.where(values >= 0, plotstyle.POSITIVE, plotstyle.NEGATIVE), error_kw={"elinewidth": 0.8})
    ax.axvline(0, color="black", lw=0.8)
    ax.grid(axis="x")
    ax.set_xlabel(units + ("; bars: 95% interval" if err.any() else ""))
    ax.set_ylabel(_player_label(meta, "player"))


def _line(fig, ax, result: ShapleyResult, axis: list, grid, scale: float, units: str, meta) -> None:
    x = np.asarray(axis, dtype=float)  # years, so the axis must be numeric
    order = np.argsort(x)
    x, y, err = x[order], scale * result.values[order], scale * _errors(result)[order]
    ax.plot(x, y, marker="o", color=plotstyle.POSITIVE, lw=1.4, ms=4)
    if err.any():
        ax.fill_between(x, y - err, y + err, alpha=0.2, color=plotstyle.POSITIVE, lw=0, label="95% interval")
        ax.legend(frameon=False)
    ax.axhline(0, color="black", lw=0.8)
    ax.grid(axis="y")
    plotstyle.integer_axis(ax.xaxis)
    ax.set_xlabel(_player_label(meta, "year"))
    ax.set_ylabel(units)


def _heatmap(fig, ax, result: ShapleyResult, axis: list, grid, scale: float, units: str, meta) -> None:
    """The patch grid as the image lies on the ground: row 0 is the northern edge (north up), column 0
    the western edge, as the sub-patches are cut from north-up rasters."""
    if grid is None:
        raise ValueError("a heatmap needs grid=(rows, cols)")
    cells = scale * patch_grid(result.players, result.values, grid)
    bound = plotstyle.symmetric_limit(cells)
    image = ax.imshow(cells, cmap=plotstyle.DIVERGING, norm=TwoSlopeNorm(0.0, -bound, bound), origin="upper")
    fig.colorbar(image, ax=ax, label=units, shrink=0.85)
    if cells.size <= 144:  # numbers stay legible on small grids only
        texts = plotstyle.format_values(cells.ravel())
        for (r, c), v in np.ndenumerate(cells):
            if np.isfinite(v):
                ax.text(c, r, texts[r * grid[1] + c], ha="center", va="center", fontsize=8,
                        color=plotstyle.text_colour(image.cmap(image.norm(v))))
    ax.set_xticks(range(grid[1]), [str(c) for c in range(grid[1])])
    ax.set_yticks(range(grid[0]), [str(r) for r in range(grid[0])])
    ax.set_xlabel("patch column (west → east)")
    ax.set_ylabel("patch row (north → south)")
    for side in ("top", "right"):
        ax.spines[side].set_visible(True)


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
