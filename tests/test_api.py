"""`miam_cli.api`: the example of docs/api.md runs as written, and the API returns what the commands write."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from miam_cli import api
from miam_cli.errors import UserError

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")


def test_docs_api_example_runs_as_written(landscape, landscape_run, tmp_path, capsys):
    """The demo's layout (demo-out/runs/landscape, demo-out/data/landscape) from the tiny landscape run."""
    shutil.copytree(landscape, tmp_path / "demo-out" / "data" / "landscape")
    shutil.copytree(landscape_run, tmp_path / "demo-out" / "runs" / "landscape")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(blocks[0], str(DOC), "exec"), {})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert "multilabel" in printed and "pixels where Sentinel-2 raises p:" in printed
    run_dir = tmp_path / "demo-out" / "runs" / "landscape"
    assert (run_dir / "predict" / "store-predict.parquet").exists() and (run_dir / "eval" / "subsets.csv").exists()
    assert (tmp_path / "landscape-shapley.tif").exists() and (tmp_path / "sentinel2-only.parquet").exists()


def test_api_results_are_the_files_the_commands_write(landscape_run, tmp_path, cli):
    run = api.load_run(landscape_run)
    res = api.predict(run, split="test", species=["114"], out=tmp_path / "api.parquet")
    assert res.rows == len(res.table) == run.store.meta.splits["test"] and res.columns == ["sample_id", "lon", "lat", "114"]
    assert cli("predict", landscape_run, "--split", "test", "--species", "114", "--out", tmp_path / "cli.parquet")[0] == 0
    pd.testing.assert_frame_equal(res.table, pd.read_parquet(tmp_path / "cli.parquet"))
    with pytest.raises(UserError, match="has no predict split|--species"):
        api.predict(run, species=["not-a-species"], out=tmp_path / "x.parquet")
