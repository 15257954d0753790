"""The plateau regime's generator: files, determinism, planted truth, and a store `prepare custom` accepts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from miam_cli.errors import UserError
from miam_cli.synth.plateau import COLUMNS, synth_plateau


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("plateau")
    summary = synth_plateau(out, points=1500, seed=3)
    return out, summary, pd.read_csv(out / "points.csv"), json.loads((out / "truth.json").read_text())


def test_files_columns_and_determinism(data, tmp_path):
    out, summary, points, truth = data
    assert list(points.columns[:4]) == ["id", "lon", "lat", "presence"]
    assert set(points.columns[4:]) == {c for cols in COLUMNS.values() for c in cols}
    assert len(points) == 1500 and points["id"].is_unique
    assert 0.2 < summary["presence_rate"] < 0.3 and truth["weak_modality"] == "cover"
    again = tmp_path / "again"
    synth_plateau(again, points=1500, seed=3)
    assert (again / "points.csv").read_bytes() == (out / "points.csv").read_bytes()
    with pytest.raises(UserError, match="points"):
        synth_plateau(tmp_path / "bad", points=10)


def test_planted_truth_is_in_the_columns(data):
    """Presence rises with the climate columns; land cover carries the habitat directly and the
    temperature proxy only as an angle (cos, sin): neither angle column alone ranks presence well."""
    _, _, points, _ = data
    y = points["presence"].to_numpy()

    def auc(x):
        from sklearn.metrics import roc_auc_score

        a = roc_auc_score(y, x)
        return max(a, 1 - a)

    assert auc(points["clim1"]) > 0.75  # temperature, the dominant signal
    assert auc(points["cover3"]) > 0.6  # the habitat
    assert auc(points["cover4"]) < 0.56 and auc(points["clim19"]) < 0.56  # noise columns
    angle = np.arctan2(points["cover2"], points["cover1"])  # decoding the angle recovers the proxy
    assert auc(angle) > auc(points["cover1"]) + 0.05 and auc(angle) > 0.7


def test_prepare_custom_reads_the_spec(data, cli, tmp_path):
    out, _, _, _ = data
    code, _, err = cli("prepare", "custom", out / "spec.yaml", tmp_path / "store")
    assert code == 0, err
    meta = json.loads((tmp_path / "store" / "store.json").read_text())
    assert list(meta["modalities"]) == ["climate", "soil", "topo", "cover"]
    assert [meta["modalities"][m]["tokens"] for m in meta["modalities"]] == [19, 4, 3, 4]
    assert meta["task"]["num_classes"] == 1
