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
    for stem in ("modalities-global", "sentinel2-by-band-global", "sentinel2-by-patch-global", "landsat-by-year-global"):
        assert (attribution / f"{stem}.png").stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "## Every subset of modalities" in md and "Efficiency" in md
    # the map demo: a species map and a Sentinel-2 contribution map, as COGs and PNG quick-looks
    import rasterio

    with rasterio.open(out / "maps" / "landscape-shapley.tif") as src:
        assert "shapley(sentinel2)" in src.descriptions and src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert (out / "maps" / "landscape.png").stat().st_size > 1000 and "## Maps" in md
    html = (out / "report.html").read_text()
    images = re.findall(r"<img [^>]*src='([^']*)'", html)
    assert len(images) >= 6 and all(src.startswith("data:image/png;base64,") for src in images)
