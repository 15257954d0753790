"""Users' own presence/background data: projected coordinates (`points.crs`), binary labels,
label-aware spatial blocks, label counts per split, and `miam synth points` (planted truth).

Every expectation is recomputed here from the raw files (pyproj, rasterio indexing), not through the
code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from pyproj import Transformer
from rasterio.transform import from_origin

from miam_cli.data.custom import DatasetSpec, build_points, build_split, load_spec, plan_custom
from miam_cli.data.prepare import run_prepare
from miam_cli.store.reader import TokenStore
from miam_cli.synth.points import synth_points

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """`miam synth points` with 600 points (the spec and rasters as shipped)."""
    raw = tmp_path_factory.mktemp("points") / "data"
    synth_points(raw, points=600, seed=3)
    return raw


def prepare(spec_path: Path, store: Path) -> TokenStore:
    plan, decoder = plan_custom(load_spec(spec_path), spec_path)
    run_prepare(plan, decoder, store, chunk_size=128, overwrite=True)
    return TokenStore(store)


def spec_with(raw: Path, tmp_path: Path, **points) -> Path:
    spec = yaml.safe_load((raw / "spec.yaml").read_text())
    spec["root"], spec["allow_outside_root"] = str(raw), True  # the data lives in raw/, the spec here
    spec["points"].update(points)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def store(raw, tmp_path_factory) -> TokenStore:
    return prepare(raw / "spec.yaml", tmp_path_factory.mktemp("store") / "points")


# ================================================================ projected coordinates
def test_points_in_a_projected_crs_are_reprojected_to_lon_lat(raw, store):
    table = pd.read_csv(raw / "points.csv").set_index("id")
    samples = store.samples.set_index("sample_id").loc[table.index]
    lon, lat = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True).transform(table["x"].to_numpy(), table["y"].to_numpy())
    np.testing.assert_allclose(samples["lon"], lon, atol=1e-9)
    np.testing.assert_allclose(samples["lat"], lat, atol=1e-9)
    assert 0 < samples["lon"].min() and samples["lon"].max() < 6 and 42 < samples["lat"].min() and samples["lat"].max() < 45  # UTM 31N


def test_rasters_in_the_points_crs_are_sampled_at_the_original_coordinates(raw, store):
    table = pd.read_csv(raw / "points.csv")
    rows = store.samples.reset_index().set_index("sample_id").loc[table["id"], "index"].to_numpy()
    values, valid = store.read("climate", rows, normalize=False)
    with rasterio.open(raw / "rasters" / "temperature.tif") as src:
        grid, t = src.read(1), src.transform
    r = np.floor((t.f - table["y"].to_numpy()) / -t.e).astype(int)
    c = np.floor((table["x"].to_numpy() - t.c) / t.a).astype(int)
    assert valid[:, 0].all()
    np.testing.assert_array_equal(values[:, 0, 0], grid[r, c])


def test_no_coordinate_is_transformed_twice(raw, tmp_path, monkeypatch):
    """Rasters in the points' own CRS get the original x/y untouched; only a raster in another CRS
    gets one transform, straight from the points' CRS (never via lon/lat)."""
    import rasterio.warp

    calls = []
    real = rasterio.warp.transform
    monkeypatch.setattr(rasterio.warp, "transform", lambda src, dst, *a, **k: calls.append((str(src), str(dst))) or real(src, dst, *a, **k))
    plan_custom(load_spec(raw / "spec.yaml"), raw / "spec.yaml")
    assert calls == []
    # a lon/lat raster whose value is a function of lon/lat: one transform, from EPSG:32631
    with rasterio.open(tmp_path / "lonlat.tif", "w", driver="GTiff", height=800, width=800, count=1, dtype="float64",
                       crs="EPSG:4326", transform=from_origin(-2.0, 47.0, 0.01, 0.01)) as dst:
        cols, rows_ = np.meshgrid(np.arange(800), np.arange(800))
        dst.write(1000.0 * rows_ + cols, 1)
    spec = yaml.safe_load((raw / "spec.yaml").read_text())
    spec["root"], spec["allow_outside_root"] = str(raw), True  # the data lives in raw/, the raster here
    spec["modalities"] = {"geo": {"kind": "raster_values", "files": {"g": str(tmp_path / "lonlat.tif")}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    plan, decoder = plan_custom(load_spec(path), path)
    assert len(calls) == 1 and "32631" in calls[0][0] and "4326" in calls[0][1]
    values = decoder(range(len(plan.samples))).values["geo"][:, 0, 0]
    lon, lat = plan.samples["lon"].to_numpy(), plan.samples["lat"].to_numpy()
    np.testing.assert_array_equal(values, 1000.0 * np.floor((47.0 - lat) / 0.01) + np.floor((lon + 2.0) / 0.01))


def test_metres_read_as_degrees_are_refused_with_a_hint(raw, tmp_path, cli):
    spec = spec_with(raw, tmp_path, lon="x", lat="y")
    spec_doc = yaml.safe_load(spec.read_text())
    for key in ("crs", "x", "y"):
        spec_doc["points"].pop(key)
    spec.write_text(yaml.safe_dump(spec_doc))
    code, out, err = cli("prepare", "custom", spec, tmp_path / "store")
    assert code == 2 and "Traceback" not in err and out == ""
    assert "600 of 600 points have coordinates outside -180..180 / -90..90: set points.crs?" in err
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("points, message", [
    ({"crs": None}, "points: x/y are coordinates in a projected CRS: set points.crs too"),
    ({"crs": "EPSG:999999"}, "points.crs: 'EPSG:999999' is not a CRS"),
    ({"y": None}, "points: give both x and y"),
    ({"lon": "x"}, "points: give lon/lat or x/y, not both"),
])
def test_bad_coordinate_keys_name_the_key(raw, tmp_path, cli, points, message):
    spec = spec_with(raw, tmp_path)
    doc = yaml.safe_load(spec.read_text())
    for k, v in points.items():
        doc["points"].pop(k) if v is None else doc["points"].__setitem__(k, v)
    spec.write_text(yaml.safe_dump(doc))
    code, _, err = cli("prepare", "custom", spec, tmp_path / "store")
    assert code == 2 and message in err and "Traceback" not in err


# ================================================================ binary labels
def small_table(tmp_path: Path, presence: list, name: str = "presence") -> Path:
    n = len(presence)
    pd.DataFrame({"id": range(n), "lon": np.linspace(1, 2, n), "lat": np.linspace(43, 44, n), name: presence,
                  "t": np.arange(n, dtype=float)}).to_csv(tmp_path / "pts.csv", index=False)
    spec = {"name": "bin", "points": {"path": "pts.csv", "labels": {"binary": name}, "split": {"block_size": 0.1}},
            "modalities": {"tab": {"kind": "columns", "columns": ["t"]}}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path / "spec.yaml"


def test_binary_labels_give_one_class_with_background_negatives(tmp_path):
    presence = [1, 0, "true", "False", None, 0, 1.0, "yes", 0, 0]
    store = prepare(small_table(tmp_path, presence), tmp_path / "store")
    assert store.meta.task.type == "multilabel" and store.meta.task.num_classes == 1
    assert list(store.classes["original_id"]) == ["presence"]
    # an empty cell is neither presence nor background: that point waits in the predict split
    assert list(store.samples["sample_id"]) == [str(i) for i in range(len(presence))]
    assert list(store.samples["split"] == "predict") == [v is None for v in presence]
    kept = [i for i, v in enumerate(presence) if v is not None]
    y = store.targets(np.array(kept))[:, 0]
    np.testing.assert_array_equal(y, [1, 0, 1, 0, 0, 1, 1, 0, 0])
    report = json.loads((tmp_path / "store" / "prepare-report.json").read_text())
    assert "dropped" not in report or not report["dropped"]
    assert report["labels"]["all"] == {"samples": 9, "positives": 4, "positive_rate": pytest.approx(4 / 9), "classes_present": 1}


def test_binary_column_with_other_values_is_refused(tmp_path, cli):
    code, _, err = cli("prepare", "custom", small_table(tmp_path, [1, 0, 2, "maybe"]), tmp_path / "store")
    assert code == 2 and "points.labels.binary: column 'presence' holds ['2', 'maybe']; expected 0/1 or true/false" in err


def test_class_on_a_01_column_warns_and_suggests_binary(tmp_path, cli):
    spec = small_table(tmp_path, [1, 0, 1, 0, 0, 1])
    doc = yaml.safe_load(spec.read_text())
    doc["points"]["labels"] = {"class": "presence"}
    spec.write_text(yaml.safe_dump(doc))
    code, _, err = cli("prepare", "custom", spec, tmp_path / "store")
    assert code == 0
    assert "warning" in err and "holds only 0/1" in err and "{binary: presence}" in " ".join(err.split())


def test_documented_binary_example_is_a_valid_spec():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "dataset-spec.md").read_text()
    example = doc.split("## Presence/background data", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = DatasetSpec.model_validate(yaml.safe_load(example))
    assert spec.points.labels.binary == "presence" and spec.points.crs == 32631 and spec.points.x == "x"


# ================================================================ label-aware spatial blocks
def split_rates(raw: Path, tmp_path: Path, **split) -> tuple[dict, np.ndarray, np.ndarray]:
    spec = load_spec(spec_with(raw, tmp_path, split=split))
    ctx, labels, classes, _, _ = build_points(spec, raw)
    assignment, info = build_split(ctx, spec.points.split, labels, len(classes))
    y = np.array([len(lab) > 0 for lab in labels])
    rates = {s: float(y[assignment == s].mean()) for s in ("train", "val", "test")}
    return {"rates": rates, "info": info, "sizes": {s: int((assignment == s).sum()) for s in rates}}, assignment, y


def test_label_aware_blocks_keep_each_split_near_the_overall_presence_rate(raw, tmp_path):
    overall = float(pd.read_csv(raw / "points.csv")["presence"].mean())
    worst = {}
    for balance in ("none", "labels"):
        dev = []
        for seed in range(4):
            res, assignment, _ = split_rates(raw, tmp_path, block_size="40km", seed=seed, balance=balance)
            dev.append(max(abs(r - overall) for r in res["rates"].values()))
            assert res["info"]["balance"] == balance and res["info"]["block_units"] == "metres in EPSG:32631"
            for s, frac in zip(("train", "val", "test"), (0.7, 0.15, 0.15)):
                assert abs(res["sizes"][s] - frac * 600) < 0.1 * 600
        worst[balance] = max(dev)
    assert worst["labels"] < 0.05 < worst["none"]  # random blocks stray by more than 5 points, label-aware ones do not


def test_blocks_stay_whole_and_are_square_in_metres(raw, tmp_path):
    _, assignment, _ = split_rates(raw, tmp_path, block_size="40km", seed=0)
    table = pd.read_csv(raw / "points.csv")
    block = (table["x"] // 40_000).astype(int).astype(str) + "/" + (table["y"] // 40_000).astype(int).astype(str)
    assert (pd.Series(assignment).groupby(block.to_numpy()).nunique() == 1).all()
    assert block.nunique() > 20


def test_block_size_in_km_for_lon_lat_points(tmp_path):
    from miam_cli.data.coords import parse_block_size

    size = parse_block_size("50km")
    width, height, units = size.cell(np.array([60.0, 60.0]))
    assert height == pytest.approx(50_000 / 111_320) and width == pytest.approx(2 * height) and "degrees" in units
    assert parse_block_size(0.5).cell(np.zeros(1))[:2] == (0.5, 0.5)
    with pytest.raises(ValueError, match="give degrees"):
        parse_block_size("fifty km")


def test_label_aware_blocks_cover_classes_in_a_multilabel_task(tmp_path):
    """Rare classes clustered in space: random blocks leave them out of val/test; label-aware blocks
    give every split a share of them."""
    rng = np.random.default_rng(0)
    n = 1500
    lon, lat = rng.uniform(0, 10, n), rng.uniform(40, 50, n)
    species = []
    for x, y in zip(lon, lat):
        s = ["common"] if rng.random() < 0.5 else []
        s += [f"rare{k}" for k in range(12) if abs(x - (k % 4) * 2.5 - 1) < 1.2 and abs(y - 40 - (k // 4) * 3 - 1.5) < 1.2 and rng.random() < 0.6]
        species.append(" ".join(s) or "[]")  # "[]": surveyed, nothing found (an empty cell is unlabelled)
    pd.DataFrame({"id": range(n), "lon": lon, "lat": lat, "species": species, "t": lon}).to_csv(tmp_path / "pts.csv", index=False)
    coverage = {}
    for balance in ("none", "labels"):
        spec = {"points": {"path": "pts.csv", "labels": {"species": "species"}, "split": {"block_size": 1.0, "balance": balance}},
                "modalities": {"tab": {"kind": "columns", "columns": ["t"]}}}
        (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
        store = prepare(tmp_path / "s.yaml", tmp_path / f"store-{balance}")
        counts = store.classes.set_index("original_id")[["count_train", "count_val", "count_test"]]
        share = counts.div(counts.sum(axis=1), axis=0)
        coverage[balance] = float((share[["count_val", "count_test"]] - 0.15).abs().max().max())
        info = json.loads((tmp_path / f"store-{balance}" / "prepare-report.json").read_text())["labels"]
        assert all(info[s]["classes_present"] == 13 for s in ("train", "val", "test")) or balance == "none"
    assert coverage["labels"] < 0.06 and coverage["labels"] < coverage["none"]


# ================================================================ label counts per split
def test_store_info_shows_label_counts_per_split(store, cli):
    code, out, _ = cli("store", "info", store.path, "--json")
    labels = json.loads(out)["labels"]
    samples = store.samples
    for s in ("train", "val", "test"):
        y = samples.loc[samples["split"] == s, "labels"].map(len)
        assert labels[s] == {"samples": len(y), "positives": int(y.sum()), "positive_rate": pytest.approx(y.mean()), "classes_present": 1}
    report = json.loads((store.path / "prepare-report.json").read_text())
    assert report["labels"] == labels
    code, out, _ = cli("store", "info", store.path)
    assert "labels per split" in out and "presences" in out and "label-aware" in out


# ================================================================ miam synth points
def test_synth_points_planted_truth(raw, store):
    truth = json.loads((raw / "truth.json").read_text())
    table = pd.read_csv(raw / "points.csv")
    assert list(table.columns) == ["id", "x", "y", "presence"] and len(table) == 600
    assert table["presence"].sum() == truth["presences"] == 180
    assert truth["weak_modality"] == "soil" and truth["strength_order"] == ["climate", "terrain", "soil"]
    with rasterio.open(raw / "rasters" / "soil_ph.tif") as src:
        assert src.crs.to_epsg() == 32631 and src.res == (1000.0, 1000.0) and src.descriptions == ("soil_ph",)
    # the planted signs: presences sit where it is warmer, higher and more basic than the background
    idx = np.arange(store.meta.num_samples)
    y = store.targets(idx)[:, 0] > 0
    clim, _ = store.read("climate", idx, normalize=False)
    soil, ok = store.read("soil", idx, normalize=False)
    terrain, _ = store.read("terrain", idx, normalize=False)
    assert clim[y, 0, 0].mean() > clim[~y, 0, 0].mean() + 0.5  # temperature, degrees
    assert terrain[y].mean() > terrain[~y].mean() + 50  # elevation, metres
    ok = ok[:, 0]
    assert soil[y & ok, 0, 0].mean() > soil[~y & ok, 0, 0].mean()  # weak, but in the planted direction


def test_synth_points_is_deterministic_and_refuses_foreign_folders(raw, tmp_path):
    synth_points(tmp_path / "again", points=600, seed=3)
    for name in ("points.csv", "spec.yaml", "recipe.yaml", "truth.json", "rasters/temperature.tif", "rasters/soil_ph.tif"):
        assert (tmp_path / "again" / name).read_bytes() == (raw / name).read_bytes(), name
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    from miam_cli.errors import UserError

    with pytest.raises(UserError, match="not empty"):
        synth_points(tmp_path / "mine", points=100)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_an_interrupted_synth_is_refused_by_prepare_and_replaced_by_a_rerun(raw, tmp_path, monkeypatch, cli):
    import miam_cli.synth.points as points_module

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt  # Ctrl-C after the rasters, points.csv and spec.yaml are written

    out = tmp_path / "cut"
    with monkeypatch.context() as m:
        m.setattr(points_module, "recipe", interrupted)
        with pytest.raises(KeyboardInterrupt):
            synth_points(out, points=600, seed=3)
    assert (out / "spec.yaml").exists() and not (out / "truth.json").exists()
    code, _, err = cli("prepare", "custom", out / "spec.yaml", tmp_path / "store")
    assert code == 2 and "unfinished `miam synth points` output" in err and str(out) in err
    assert not (tmp_path / "store").exists()
    synth_points(out, points=600, seed=3)  # the same generator recognises its own partial output and replaces it
    assert not (out / ".miam-unfinished").exists()
    for name in ("points.csv", "spec.yaml", "truth.json", "rasters/temperature.tif"):
        assert (out / name).read_bytes() == (raw / name).read_bytes(), name
    plan_custom(load_spec(out / "spec.yaml"), out / "spec.yaml")  # no longer refused
    (out / "truth.json").unlink()
    (out / ".miam-unfinished").write_text("miam synth geoplant\n")  # another generator's partial output is not ours
    with pytest.raises(Exception, match="holds no earlier `miam synth points` output"):
        synth_points(out, points=100)
