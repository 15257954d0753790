"""How every miam figure looks: one place for fonts, colours, titles, axis labels, number format and files.

Every plot goes through here (attribution reports, the subset heat map, and the imbalance monitor),
so a figure in a paper, a slide and a report reads the same way:

- ``@styled`` on the function that draws, and ``new_figure(w, h)`` in it: a bare matplotlib Figure on
  the Agg canvas (no pyplot global state, works headless, never changes the process's backend), drawn
  under the house style (``STYLE``).
- ``set_titles(fig, subject, context(...))``: a line saying what is shown, and a second line naming
  the run, its masking strategy and the split (`context`).
- ``METRIC_LABELS`` / ``metric_label``: metrics in words; ``shapley_units``: φ's axis label with its unit.
- ``integer_axis(ax.xaxis)``: years and epochs get whole-number ticks.
- ``decimals_for`` / ``format_values``: one number format shared by the numbers of one figure.
- ``save_figure(fig, path, fmt)``: `png` (200 dpi), `svg` or `pdf`, written atomically; returns the path.

Applying it to a plot that draws with its own Figure: decorate the function with ``@styled``, replace
``Figure(...)`` + ``FigureCanvasAgg`` with ``new_figure(...)``, put the titles on with ``set_titles``,
label axes with words and units, and write with ``save_figure`` (the ``plot_format`` the command was
given).
"""

from __future__ import annotations

import functools
import io
import math
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from miam_cli.errors import UserError
from miam_cli.store.atomic import atomic_write_bytes

FORMATS = ("png", "svg", "pdf")
PNG_DPI = 200
POSITIVE, NEGATIVE, NEUTRAL = "#2166ac", "#b2182b", "#4d4d4d"  # the ends of RdBu, so bars and heat maps agree
DIVERGING = "RdBu_r"  # signed values (Shapley values): white at zero
SEQUENTIAL = "viridis"  # metrics: perceptually uniform, readable in grey

STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "axes.formatter.useoffset": False,  # 2003, never "3 + 2e3"
    "svg.fonttype": "none",  # text stays text in SVG (editable, searchable)
    "pdf.fonttype": 42,  # TrueType in PDF: journals reject Type 3 fonts
}

METRIC_LABELS = {
    "auc": "macro AUC",
    "auprc": "AUPRC (average precision)",
    "tss": "max TSS",
    "f1_25": "F1 @ top 25",
    "recall_25": "recall @ top 25",
    "top1": "top-1 accuracy",
    "top5": "top-5 accuracy",
    "loss": "mean loss",
}
_AT_K = re.compile(r"^(f1|recall)_(\d+)$")  # k follows the class count (scoring.metrics.metric_set)
AXIS_LABELS = {"band": "spectral band", "year": "year", "patch": "patch", "variable": "variable",
               "modality": "input modality", "token": "token", "time": "time step"}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UserError(f"--plot-format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return fmt


def metric_label(name: str) -> str:
    """A metric column in words (`auc` -> `macro AUC`); unknown names as they are."""
    at_k = _AT_K.match(name)
    if at_k and name not in METRIC_LABELS:
        return f"{'F1' if at_k[1] == 'f1' else 'recall'} @ top {at_k[2]}"
    return METRIC_LABELS.get(name, name.replace("_", " "))


def shapley_units(target: str) -> tuple[float, str]:
    """(scale, axis label) for Shapley values of a target: AUC and accuracy in points (× 100) as the
    compare table prints them, class probabilities in percentage points, a loss as it is."""
    if target in ("auc", "top1", "top5"):
        return 100.0, f"Shapley value φ ({metric_label(target)} points)"
    if target.startswith("p("):
        return 100.0, f"Shapley value φ ({target}, percentage points)"
    if target == "-loss":
        return 1.0, "Shapley value φ (decrease of the mean loss)"
    return 1.0, f"Shapley value φ ({target})"


def context(run: str | Path | None = None, strategy: str | None = None, split: str | None = None,
            extra: Iterable[str] = ()) -> str:
    """`run demo-miam (miam) · test split · …`: which model, trained how, measured on what."""
    parts = []
    if run is not None:
        parts.append(f"run {Path(run).name}" + (f" ({strategy} masking)" if strategy else ""))
    elif strategy:
        parts.append(f"{strategy} masking")
    if split:
        parts.append(f"{split} split")
    parts.extend(e for e in extra if e)
    return " · ".join(parts)


def styled(draw):
    """Decorate a function that makes a figure: it runs under the house style (matplotlib reads
    most settings when an artist is made, so the whole drawing must happen inside)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper


def new_figure(width: float, height: float) -> Figure:
    """A Figure on its own Agg canvas, laid out by constrained layout (call it in a `@styled` function)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def set_titles(fig: Figure, subject: str, subtitle: str = "") -> None:
    """The figure's title: what is shown, then (next lines) of which run, strategy and split, both
    wrapped to the figure's width (a title wider than its figure is cut off at both ends)."""
    width = max(30, int(fig.get_figwidth() * 72 / (STYLE["figure.titlesize"] * 0.55)))
    fig.suptitle("\n".join(textwrap.wrap(subject, width) + _wrap_parts(subtitle, width)), linespacing=1.4)


def _wrap_parts(text: str, width: int, sep: str = " · ") -> list[str]:
    """Lines of whole `sep`-separated parts (a run name is never cut in two), each at most `width` long."""
    lines: list[str] = []
    for part in text.split(sep) if text else []:
        if lines and len(lines[-1]) + len(sep) + len(part) <= width:
            lines[-1] += sep + part
        else:
            lines.append(part)
    return lines


def integer_axis(axis) -> None:
    """Whole-number ticks written plainly: years (2003, not 2.003e3 or 2002.5) and epochs."""
    axis.set_major_locator(MaxNLocator(integer=True))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(round(v))}"))


def decimals_for(values: Iterable[float], significant: int = 3) -> int:
    """Decimals that give the largest |value| `significant` digits; all numbers of a figure share them."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    if not finite:
        return 0
    return max(0, significant - 1 - int(math.floor(math.log10(max(finite)))))


def format_values(values: Iterable[float], significant: int = 3) -> list[str]:
    values = list(values)
    d = decimals_for(values, significant)
    return ["–" if v is None or not math.isfinite(v) else f"{v:.{d}f}" for v in values]


def text_colour(rgba) -> str:
    """Black on light cells, white on dark ones (relative luminance), so every number stays legible."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    buf = io.BytesIO()
    with rc_context(STYLE):  # the file settings (SVG text, PDF fonts) apply when writing
        fig.savefig(buf, format=check_format(fmt), dpi=PNG_DPI if fmt == "png" else None)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, fmt: str = "png") -> Path:
    """Write `fig` as `path` with the suffix of `fmt` (png at 200 dpi, svg, pdf), atomically."""
    path = Path(path).with_suffix(f".{check_format(fmt)}")
    atomic_write_bytes(path, figure_bytes(fig, fmt))
    return path


def symmetric_limit(values: np.ndarray) -> float:
    """The colour limit of a diverging scale: the largest |value|, so zero sits at its white centre."""
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0
