"""`miam demo` end to end at a tiny size: every stage runs and the report holds what it promises."""

import re

import pandas as pd
import pytest

from miam_cli.cli.main import main


def test_demo_writes_the_whole_pipeline_and_a_self_contained_report(tmp_path, capsys):
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(out), "--surveys", "150", "--species", "6", "--epochs", "1", "--budget", "60"])
    assert e.value.code == 0
    stdout = capsys.readouterr().out
    assert "| miam |" in stdout and "| uniform |" in stdout and str(out / "report.html") in stdout
    for strategy in ("miam", "uniform"):
        table = pd.read_csv(out / "runs" / strategy / "eval" / "subsets.csv")
        assert len(table[table["kind"] == "subset"]) == 7  # 2^3 - 1 subsets of the three masking modalities
        assert {"tabular[variable=bio1]", "sentinel2[patch=center]", "landsat[year=2003]"} <= set(table["subset"])
    attribution = out / "runs" / "miam" / "attribution"
    for stem in ("modalities-global-test", "sentinel2-by-band-global-context-none-test", "sentinel2-by-patch-global-context-none-test",
                 "landsat-by-year-global-context-none-test"):
        assert (attribution / f"{stem}.png").stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "## Every subset of modalities" in md and "Efficiency" in md
    # the map demo: a species map and a Sentinel-2 contribution map, as COGs and PNG quick-looks
    import rasterio

    with rasterio.open(out / "maps" / "landscape-shapley.tif") as src:
        assert "shapley(sentinel2)" in src.descriptions and src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert (out / "maps" / "landscape.png").stat().st_size > 1000 and "## Maps" in md
    html = (out / "report.html").read_text()
    images = re.findall(r'<img src="([^"]*)"', html)
    assert len(images) >= 6 and all(src.startswith("data:image/png;base64,") for src in images)
    # a real Markdown renderer: lists are lists, every table sits in a box that scrolls sideways
    bullets = [line for line in md.splitlines() if line.startswith("- ")]
    assert len(bullets) >= 8 and html.count("<li>") == len(bullets) and "<p>- " not in html
    assert html.count('<div class="table-wrap"><table>') == html.count("<table") >= 3


def test_report_html_embeds_png_and_svg_and_links_what_a_browser_cannot_show(tmp_path):
    from miam_cli.pipeline.report import _html

    (tmp_path / "a.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "b.svg").write_text("<svg/>")
    (tmp_path / "c.pdf").write_bytes(b"%PDF fake")
    html = _html("# r\n\n![a](a.png)\n\n![b](b.svg)\n\n![c](c.pdf)\n\n![d](gone.png)\n\n- one\n- **two**\n", tmp_path)
    assert 'src="data:image/png;base64,' in html and 'src="data:image/svg+xml;base64,' in html
    assert "<a href='c.pdf'>figure: c.pdf</a>" in html and "missing figure" in html
    assert "<li>one</li>" in html and "<li><strong>two</strong></li>" in html
