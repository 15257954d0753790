"""Figures: titles that name run, strategy and split; axes in words with units; integer years; one
colour scale per metric; a north-up patch grid; one number format; png (200 dpi), svg and pdf."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from miam_cli import plotstyle
from miam_cli.attribution.estimators import exact_shapley
from miam_cli.attribution.report import plot_result
from miam_cli.evaluate.subsets import metric_columns, plot_subsets
from miam_cli.errors import UserError

META = {"run": "runs/demo-miam-20260101", "strategy": "miam", "split": "test", "target": "auc", "context": "none",
        "modality": "landsat", "players": "year", "samples": 447}


def additive(values):
    return lambda coalitions: np.asarray(coalitions, float) @ np.asarray(values, float)


def title_of(fig) -> str:
    return fig._suptitle.get_text()


def test_number_format_is_shared_by_a_figure():
    assert plotstyle.decimals_for([0.0123, 0.00012, -0.002]) == 4  # 3 significant digits on the largest
    assert plotstyle.format_values([2.26, -0.3, 0.13, float("nan")]) == ["2.26", "-0.30", "0.13", "–"]
    assert plotstyle.format_values([812.3, 5.0]) == ["812", "5"]


def test_year_line_has_integer_ticks_units_and_a_title_naming_run_strategy_split():
    result = exact_shapley(additive(np.linspace(-0.01, 0.02, 3)), 3, ["2000", "2001", "2002"])
    fig = plot_result(result, "line", [2000, 2001, 2002], None, "Contribution of each landsat year to the macro AUC", META)
    ax = fig.axes[0]
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    ticks = [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]
    assert ticks == ["2000", "2001", "2002"], ticks  # whole years, written plainly
    assert ax.get_xlabel() == "landsat year" and ax.get_ylabel() == "Shapley value φ (macro AUC points)"
    title = title_of(fig)
    assert "demo-miam-20260101 (miam masking)" in title and "test split" in title and "other modalities masked" in title
    # values in AUC points: the y data are 100 × φ
    np.testing.assert_allclose(ax.lines[0].get_ydata(), 100 * result.values)


def test_patch_heat_map_is_north_up_and_numbers_share_one_format():
    players = ["r0c0", "r0c1", "r1c0", "r1c1"]
    result = exact_shapley(additive([0.02, 0.001, -0.0005, 0.0123]), 4, players)
    fig = plot_result(result, "heatmap", players, (2, 2), "patches", {**META, "modality": "sentinel2", "players": "patch"})
    ax = fig.axes[0]
    bottom, top = ax.get_ylim()
    assert top < bottom  # row 0 (the northern edge) at the top
    assert "north" in ax.get_ylabel() and "west" in ax.get_xlabel()
    cells = [t.get_text() for t in ax.texts]
    assert cells == ["2.00", "0.10", "-0.05", "1.23"]  # AUC points, one number of decimals for all
    assert fig.axes[1].get_ylabel() == "Shapley value φ (macro AUC points)"  # the colour bar


def test_subset_heat_map_has_one_labelled_colour_scale_per_metric():
    table = pd.DataFrame({"subset": ["tabular", "image", "tabular+image"], "kind": "subset", "modalities": "",
                          "auc": [0.81, 0.55, 0.83], "auc_classes": [6, 6, 6], "f1_25": [0.30, 0.21, 0.31],
                          "recall_25": [1.0, 1.0, 1.0], "visible_tokens": [5.0, 16.0, 21.0], "samples": 172})
    assert metric_columns(table) == ["auc", "f1_25", "recall_25"]
    fig = plot_subsets(table, plotstyle.context("runs/r", "uniform", "val"))
    images = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(images) == 3 and [b.get_xlabel() for b in bars] == ["macro AUC", "F1 @ top 25", "recall @ top 25"]
    limits = [im.images[0].get_clim() for im in images]
    assert limits[0] == pytest.approx((0.55, 0.83)) and limits[1] == pytest.approx((0.21, 0.31))  # each its own range
    assert "run r (uniform masking)" in title_of(fig) and "val split" in title_of(fig)


@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_figures_in_three_formats_pngs_at_200_dpi(tmp_path, fmt, magic):
    result = exact_shapley(additive([0.1, 0.2]), 2, ["red", "nir"])
    fig = plot_result(result, "bars", ["red", "nir"], None, "bands", {**META, "players": "band", "modality": "sentinel2"})
    path = plotstyle.save_figure(fig, tmp_path / "fig.png", fmt)
    assert path.suffix == f".{fmt}" and path.read_bytes()[: len(magic)] == magic
    if fmt == "png":
        image = Image.open(io.BytesIO(path.read_bytes()))
        assert image.info["dpi"] == pytest.approx((200, 200), abs=0.1)
        assert image.size[0] == pytest.approx(fig.get_figwidth() * 200, abs=2)
    with pytest.raises(UserError, match="png, svg, pdf"):
        plotstyle.save_figure(fig, tmp_path / "fig", "jpeg")


def test_attribute_writes_the_chosen_format_and_the_summary_links_it(evaluated_run, cli, tmp_path):
    code, out, err = cli("attribute", evaluated_run, "--device", "cpu", "--out", tmp_path, "--json",
                         "--modality", "image", "--by", "band", "--plot-format", "svg")
    assert code == 0, err
    assert (tmp_path / "image-by-band-global-context-all-test.svg").read_text().startswith("<?xml")
    assert not (tmp_path / "image-by-band-global-context-all-test.png").exists()
    assert "(image-by-band-global-context-all-test.svg)" in (tmp_path / "summary.md").read_text()
    report = json.loads((tmp_path / "image-by-band-global-context-all-test.json").read_text())
    assert report["figure"] == "image-by-band-global-context-all-test.svg"
    code, _, err = cli("attribute", evaluated_run, "--device", "cpu", "--out", tmp_path, "--plot-format", "gif")
    assert code == 2 and "--plot-format 'gif'" in err
