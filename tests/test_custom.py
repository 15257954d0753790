"""`miam prepare custom`: dataset specs on real GeoLifeCLEF 2023 files and on small generated files.

Every count in the resulting stores is recomputed here straight from the raw files (eos markers,
raster nodata, absent or broken files), not through the readers under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import soundfile as sf
import yaml
from PIL import Image
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform

from miam_cli.data.custom import fill_pattern, load_spec, plan_custom
from miam_cli.data.prepare import run_prepare
from miam_cli.errors import UserError
from miam_cli.store.reader import TokenStore

# rasterio's own window arithmetic still uses `Affine * ...` (a PendingDeprecationWarning in affine)
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

GLC23 = Path(__file__).resolve().parents[2] / "shared/fixtures/geoplant-real/glc23-sample"
BANDS = ("red", "green", "blue", "nir", "swir1", "swir2")


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def prepare_spec(spec_path: Path, store: Path, chunk_size: int = 32, **kw) -> TokenStore:
    plan, decoder = plan_custom(load_spec(spec_path), spec_path)
    run_prepare(plan, decoder, store, chunk_size=chunk_size, overwrite=True, **kw)
    return TokenStore(store)


def counts(store: TokenStore, modality: str) -> tuple[int, int]:
    _, valid = store.read(modality, np.arange(store.meta.num_samples), normalize=False)
    return int(valid.sum()), int((~valid).sum())


# ================================================================ real GLC23 sample
def glc23_spec() -> dict:
    hf = "EnvironmentalRasters/HumanFootprint/detailed"
    return {
        "name": "glc23-po",
        "root": str(GLC23),
        "allow_outside_root": True,  # the shared fixtures live outside the test's folder
        "points": {"path": "Presence_only_occurrences/Presences_only_train_sample.csv", "sep": ";", "id": "glcID",
                   "lon": "lon", "lat": "lat", "labels": {"class": "speciesId"}},
        "modalities": {
            "sentinel2": {"kind": "files", "key": "patchID", "bands": ["red", "green", "blue", "nir"], "grid": 4,
                          "pattern": ["SatelliteImages/rgb/{id[-2:]}/{id[-4:-2]}/{id}.jpeg",
                                      "SatelliteImages/nir/{id[-2:]}/{id[-4:-2]}/{id}.jpeg"]},
            "landsat": {"kind": "timeseries_csv", "key": "timeSerieID", "sep": ";", "axis": "year",
                        "group": r"(?P<token>\d{4})_(?P<step>\d)",
                        "files": {b: f"SatelliteTimeSeries/time_series_{b}.csv" for b in BANDS}},
            "footprint": {"kind": "raster_values", "files": {"built2009": f"{hf}/Built2009_WGS84.tif",
                                                               "lights2009": f"{hf}/Lights2009_WGS84.tif"}},
            "built_patch": {"kind": "raster_patches", "file": f"{hf}/Built2009_WGS84.tif", "size": 8, "grid": 2, "bands": ["built"]},
        },
    }


@pytest.fixture(scope="module")
def glc23_store(tmp_path_factory) -> TokenStore:
    if not GLC23.is_dir():
        pytest.skip(f"real GLC23 sample files not present at {GLC23}")
    tmp = tmp_path_factory.mktemp("glc23")
    return prepare_spec(write_spec(tmp / "glc23.yaml", glc23_spec()), tmp / "store")


@pytest.fixture(scope="module")
def occurrences() -> pd.DataFrame:
    if not GLC23.is_dir():
        pytest.skip(f"real GLC23 sample files not present at {GLC23}")
    return pd.read_csv(GLC23 / "Presence_only_occurrences/Presences_only_train_sample.csv", sep=";")


def test_glc23_samples_and_classes(glc23_store, occurrences):
    meta = glc23_store.meta
    assert meta.num_samples == len(occurrences) == 100
    assert meta.task.type == "multiclass" and meta.task.num_classes == occurrences["speciesId"].nunique() == 96
    assert sum(meta.splits.values()) == 100 and meta.split["method"] == "spatial-blocks"
    classes = glc23_store.classes
    assert (classes[["count_train", "count_val", "count_test"]].to_numpy().sum(1)
            == classes["original_id"].map(occurrences["speciesId"].astype(str).value_counts()).to_numpy()).all()
    samples = glc23_store.samples.set_index("sample_id")
    expected = occurrences.set_index(occurrences["glcID"].astype(str))["speciesId"].astype(str)
    by_index = classes.set_index("class_index")["original_id"]
    assert {s: by_index[int(lab[0])] for s, lab in samples["labels"].items()} == expected.to_dict()
    assert glc23_store.report["counts"] == {} and glc23_store.report["dropped"] == {}


def test_glc23_patches_are_band_by_subpatch_tokens(glc23_store, occurrences):
    spec = glc23_store.meta.modalities["sentinel2"]
    assert (spec.kind, spec.tokens, spec.features) == ("image", 64, 1024)
    assert counts(glc23_store, "sentinel2") == (100 * 64, 0)
    pid = str(occurrences["patchID"].iloc[0])
    with Image.open(GLC23 / f"SatelliteImages/nir/{pid[-2:]}/{pid[-4:-2]}/{pid}.jpeg") as im:
        nir = np.asarray(im, dtype=np.float32)
    values, _ = glc23_store.read("sentinel2", np.array([0]), normalize=False)
    np.testing.assert_array_equal(values[0, 3 * 16 + 1 * 4 + 2], nir[32:64, 64:96].ravel())  # band nir, patch r1c2


def test_glc23_landsat_eos_markers_are_invalid_tokens(glc23_store, occurrences):
    spec = glc23_store.meta.modalities["landsat"]
    assert (spec.tokens, spec.features) == (21, 24) and spec.axes["year"] == list(range(2000, 2021))
    eos = np.zeros((100, 84), bool)
    for b in BANDS:
        table = pd.read_csv(GLC23 / f"SatelliteTimeSeries/time_series_{b}.csv", sep=";", dtype=str).set_index("timeSerieID")
        eos |= (table.reindex(occurrences["timeSerieID"].astype(str)) == "eos").to_numpy()
    invalid_years = int(eos.reshape(100, 21, 4).any(axis=2).sum())
    assert eos.sum() == 344 and invalid_years == 124
    assert counts(glc23_store, "landsat") == (100 * 21 - invalid_years, invalid_years)
    # a value: red, year 2000, quarter 1 of the first point
    red = pd.read_csv(GLC23 / "SatelliteTimeSeries/time_series_red.csv", sep=";", dtype=str).set_index("timeSerieID")
    values, _ = glc23_store.read("landsat", np.array([0]), normalize=False)
    assert values[0, 0, 0] == float(red.loc[str(occurrences["timeSerieID"].iloc[0]), "2000_1"])


def direct_raster(path: Path, lon, lat):
    """Each point's pixel by inverse affine arithmetic on the full array: (values, is-nodata)."""
    with rasterio.open(path) as src:
        data, t, nodata = src.read(1), src.transform, src.nodata
    cols = np.floor((np.asarray(lon) - t.c) / t.a).astype(int)
    rows = np.floor((np.asarray(lat) - t.f) / t.e).astype(int)
    values = data[rows, cols]
    return values, values == nodata


def test_glc23_footprint_nodata_is_invalid(glc23_store, occurrences):
    hf = GLC23 / "EnvironmentalRasters/HumanFootprint/detailed"
    values, valid = glc23_store.read("footprint", np.arange(100), normalize=False)
    total_nodata = 0
    for j, name in enumerate(("Built2009", "Lights2009")):
        direct, nodata = direct_raster(hf / f"{name}_WGS84.tif", occurrences["lon"], occurrences["lat"])
        np.testing.assert_array_equal(valid[:, j], ~nodata)
        np.testing.assert_array_equal(values[~nodata, j, 0], direct[~nodata].astype(np.float32))
        total_nodata += int(nodata.sum())
    assert total_nodata == 8
    assert counts(glc23_store, "footprint") == (200 - total_nodata, total_nodata)


def test_glc23_raster_windows_invalid_where_any_pixel_is_nodata(glc23_store, occurrences):
    with rasterio.open(GLC23 / "EnvironmentalRasters/HumanFootprint/detailed/Built2009_WGS84.tif") as src:
        data, t, nodata = src.read(1), src.transform, src.nodata
    cols = np.floor((occurrences["lon"].to_numpy() - t.c) / t.a).astype(int)
    rows = np.floor((occurrences["lat"].to_numpy() - t.f) / t.e).astype(int)
    invalid = 0
    for r, c in zip(rows, cols):
        window = data[r - 4 : r + 4, c - 4 : c + 4]  # all points lie well inside the raster
        invalid += sum((window[4 * i : 4 * i + 4, 4 * j : 4 * j + 4] == nodata).any() for i in range(2) for j in range(2))
    assert counts(glc23_store, "built_patch") == (400 - invalid, invalid)
    assert invalid > 0


# ================================================================ every kind, on generated files
IDS = ["p1", "p2", "p3", "p4", "p5", "p6"]
LON = [2.1, 2.4, 3.2, 3.6, 4.1, 9.5]  # no point halfway between two cube cells (nearest must be unambiguous)
LAT = [44.1, 44.4, 45.2, 45.6, 46.1, 49.5]
PX = 40


def make_raster(path: Path) -> np.ndarray:
    """2 bands, 40 x 40 px of 20 km in Web Mercator (EPSG:3857) from (1 E, 47 N): p6 lies outside;
    nodata (-9) in the 3 x 3 px around p4."""
    x0, y0 = warp_transform("EPSG:4326", "EPSG:3857", [1.0], [47.0])
    px, py = warp_transform("EPSG:4326", "EPSG:3857", [LON[3]], [LAT[3]])
    r, c = int((y0[0] - py[0]) // 20000), int((px[0] - x0[0]) // 20000)
    data = np.arange(2 * PX * PX, dtype=np.float32).reshape(2, PX, PX)
    data[:, r - 1 : r + 2, c - 1 : c + 2] = -9
    with rasterio.open(path, "w", driver="GTiff", width=PX, height=PX, count=2, dtype="float32", crs="EPSG:3857",
                       transform=from_origin(x0[0], y0[0], 20000, 20000), nodata=-9) as dst:
        dst.write(data)
    return data


@pytest.fixture
def every_kind(tmp_path) -> Path:
    """A points table and one input of each modality kind, with known faults and gaps."""
    import torch
    import xarray as xr

    d = tmp_path
    pd.DataFrame({"pid": IDS, "x": LON, "y": LAT, "species": ["a b", "b", "a;c", "c", "a", "b,c"],
                  "temp": [1.0, 2.0, None, 4.0, 5.0, 6.0], "rain": [10, 20, 30, 40, 50, 60],
                  "fold": ["train", "train", "train", "val", "test", "train"]}).to_parquet(d / "points.parquet")
    make_raster(d / "env.tif")
    times = pd.date_range("2001-01-01", periods=24, freq="MS")
    lat, lon = np.arange(43.0, 48.0, 1.0), np.arange(1.0, 6.0, 1.0)
    tas = np.arange(24 * 5 * 5, dtype=np.float32).reshape(24, 5, 5)
    tas[13, 2, 2] = np.nan  # 2002-02 at (45 N, 3 E), p3's nearest cell: its 2002 token has no data
    ds = xr.Dataset({"tas": (("time", "lat", "lon"), tas), "pr": (("time", "lat", "lon"), -tas)},
                    coords={"time": times, "lat": lat, "lon": lon})
    ds.to_netcdf(d / "cube.nc")
    (d / "cubes").mkdir()
    for i in IDS[:4]:
        np.save(d / "cubes" / f"{i}.npy", np.full((3, 4), float(IDS.index(i)), np.float32))
    np.save(d / "cubes" / "p5.npy", np.zeros((2, 4), np.float32))  # wrong shape; p6 has none
    (d / "sounds").mkdir()
    for i in IDS[:5]:
        sf.write(d / "sounds" / f"{i}.wav", 0.1 * np.sin(np.arange(16000) / 5.0), 16000)
    (d / "sounds" / "p6.wav").write_bytes(b"RIFF0000WAVEjunk")  # corrupt
    (d / "imgs").mkdir()
    for k, i in enumerate(IDS):
        Image.fromarray(np.full((8, 8, 3), 10 * k, np.uint8)).save(d / "imgs" / f"{i}.png")
    (d / "series.csv").write_text("pid;t1;t2;t3\np1;1;2;3\np2;eos;2;3\np3;1;NA;eos\np4;1;abc;3\np5;4;5;-9999\n")  # p6 absent
    pd.DataFrame({"id": IDS[:5], "vec": [np.arange(3.0) + k for k in range(5)]}).to_parquet(d / "emb.parquet")
    torch.save({"ids": IDS, "other": torch.zeros(6, 2)}, d / "emb.pt")
    spec = {
        "name": "every-kind",
        "points": {"path": "points.parquet", "id": "pid", "lon": "x", "lat": "y", "labels": {"species": "species"},
                   "split": {"column": "fold"}},
        "modalities": {
            "tab": {"kind": "columns", "columns": ["temp", "rain"]},
            "env": {"kind": "raster_values", "files": ["env.tif"]},
            "envpatch": {"kind": "raster_patches", "file": "env.tif", "size": 4, "grid": 2, "bands": ["b1", "b2"]},
            "clim": {"kind": "cube", "path": "cube.nc", "variables": ["tas", "pr"], "tokens": "year"},
            "arr": {"kind": "files", "pattern": "cubes/{id}.npy", "axis": "depth", "axis_values": [0, 10, 20]},
            "snd": {"kind": "files", "pattern": "sounds/{id}.wav", "audio": {"seconds": 1.0, "tokens": 4, "n_mels": 8}},
            "img": {"kind": "files", "pattern": "imgs/{id}.png", "grid": 2},
            "ts": {"kind": "timeseries_csv", "files": "series.csv", "sep": ";", "missing": ["eos", "NA", -9999]},
            "emb": {"kind": "embeddings", "path": "emb.parquet"},
            "loc": {"kind": "location", "scales": 2},
        },
    }
    return write_spec(d / "spec.yaml", spec)


def test_every_kind_of_modality(every_kind, tmp_path):
    store = prepare_spec(every_kind, tmp_path / "store")
    meta = store.meta
    assert meta.task.type == "multilabel" and meta.task.metric == "macro_auc" and meta.task.num_classes == 3
    assert meta.splits == {"train": 4, "val": 1, "test": 1} and meta.split["method"] == "column"
    labels = {s: sorted(store.classes["original_id"][lab].tolist()) for s, lab in zip(store.samples["sample_id"], store.samples["labels"])}
    assert labels == {"p1": ["a", "b"], "p2": ["b"], "p3": ["a", "c"], "p4": ["c"], "p5": ["a"], "p6": ["b", "c"]}
    kinds = {m: (s.kind, s.tokens, s.features) for m, s in meta.modalities.items()}
    assert kinds == {"tab": ("tabular", 2, 1), "env": ("tabular", 2, 1), "envpatch": ("image", 8, 4), "clim": ("timeseries", 2, 24),
                     "arr": ("timeseries", 3, 4), "snd": ("audio", 4, 8), "img": ("image", 12, 16), "ts": ("timeseries", 3, 1),
                     "emb": ("embedding", 1, 3), "loc": ("location", 1, 8)}
    assert counts(store, "tab") == (11, 1)  # p3's empty temp
    faults = sorted((f["kind"], f["modality"], f["sample"]) for f in store.report["faults"])
    assert faults == [("bad_value", "ts", "p4"), ("corrupt_file", "snd", "p6"), ("missing_embedding", "emb", "p6"),
                      ("missing_file", "arr", "p6"), ("missing_row", "ts", "p6"), ("wrong_shape", "arr", "p5")]
    assert counts(store, "arr") == (12, 6) and counts(store, "snd") == (20, 4) and counts(store, "emb") == (5, 1)
    assert counts(store, "img") == (72, 0) and counts(store, "loc") == (6, 0)
    # timeseries: eos (p2 t1, p3 t3), NA (p3 t2), -9999 (p5 t3), abc (p4 t2), p6 absent
    assert counts(store, "ts") == (18 - 5 - 3, 8)
    arr, _ = store.read("arr", np.arange(6), normalize=False)
    assert (arr[3] == 3.0).all() and meta.modalities["arr"].axes["depth"] == [0, 10, 20]


def test_workers_give_the_same_store(every_kind, tmp_path):
    """Spawned decoding workers (sources and faults pickled) write what a single process writes."""
    serial = prepare_spec(every_kind, tmp_path / "serial")
    parallel = prepare_spec(every_kind, tmp_path / "parallel", chunk_size=2, workers=2)  # 3 chunks
    for m in serial.modalities:
        for a, b in zip(serial.read(m, np.arange(6), normalize=False), parallel.read(m, np.arange(6), normalize=False)):
            np.testing.assert_array_equal(a, b)
    key = lambda f: (f["modality"], f["sample"])  # noqa: E731
    assert sorted(serial.report["faults"], key=key) == sorted(parallel.report["faults"], key=key)


def test_raster_values_reproject_points_and_mask_nodata(every_kind, tmp_path):
    store = prepare_spec(every_kind, tmp_path / "store")
    data = make_raster(tmp_path / "again.tif")
    with rasterio.open(tmp_path / "again.tif") as src:
        t = src.transform
    xs, ys = warp_transform("EPSG:4326", "EPSG:3857", LON, LAT)
    cols = np.floor((np.asarray(xs) - t.c) / t.a).astype(int)
    rows = np.floor((np.asarray(ys) - t.f) / t.e).astype(int)
    values, valid = store.read("env", np.arange(6), normalize=False)
    for i, (r, c) in enumerate(zip(rows, cols)):
        inside = 0 <= r < PX and 0 <= c < PX
        expected = data[:, r, c] if inside else np.array([-9.0, -9.0])
        np.testing.assert_array_equal(valid[i], expected != -9)
        np.testing.assert_array_equal(values[i, :, 0], np.where(expected != -9, expected, 0))
    assert not valid[5].any()  # p6 (9.5 E, 49.5 N) lies outside the raster
    assert not valid[3].any() and valid[[0, 1, 2, 4]].all()  # p4 on nodata
    assert counts(store, "env") == (8, 4)
    # 4 x 4 windows (rows r-2 .. r+1) cut 2 x 2: a sub-patch is valid when all its pixels are inside and not nodata
    padded = np.pad(data[0], 2, constant_values=-9)
    _, patch_ok = store.read("envpatch", np.arange(6), normalize=False)
    for i, (r, c) in enumerate(zip(rows, cols)):
        window = padded[r : r + 4, c : c + 4] if 0 <= r < PX and 0 <= c < PX else np.full((4, 4), -9.0)
        ok = [(window[2 * a : 2 * a + 2, 2 * b : 2 * b + 2] != -9).all() for a in range(2) for b in range(2)]
        np.testing.assert_array_equal(patch_ok[i], ok * 2)  # both bands share the nodata
    assert not patch_ok[3].any() and not patch_ok[5].any()


def test_cube_nearest_cell_by_year(every_kind, tmp_path):
    store = prepare_spec(every_kind, tmp_path / "store")
    spec = store.meta.modalities["clim"]
    assert spec.axes["year"] == [2001, 2002]
    values, valid = store.read("clim", np.arange(6), normalize=False)
    tas = np.arange(24 * 5 * 5, dtype=np.float32).reshape(24, 5, 5)
    for i in range(5):
        r, c = int(np.argmin(np.abs(np.arange(43.0, 48.0) - LAT[i]))), int(np.argmin(np.abs(np.arange(1.0, 6.0) - LON[i])))
        if i == 2:
            assert valid[i].tolist() == [True, False]
        for y in range(2 if i != 2 else 1):
            np.testing.assert_array_equal(values[i, y, :12], tas[12 * y : 12 * y + 12, r, c])  # tas months
            np.testing.assert_array_equal(values[i, y, 12:], -tas[12 * y : 12 * y + 12, r, c])  # then pr
    assert not valid[5].any()  # outside the cube's grid


def test_pattern_slices():
    assert fill_pattern("rgb/{id[-2:]}/{id[-4:-2]}/{id}.jpeg", "5217083") == "rgb/83/70/5217083.jpeg"
    assert fill_pattern("{id[:3]}-{id}", "abcdef") == "abc-abcdef"


# ================================================================ spec errors
def base_spec(tmp_path: Path) -> dict:
    pd.DataFrame({"id": [1, 2, 3], "lon": [1.0, 2.0, 3.0], "lat": [45.0, 46.0, 47.0], "cls": ["a", "b", "a"],
                  "t": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "points.csv", index=False)
    return {"points": {"path": "points.csv", "labels": {"class": "cls"}},
            "modalities": {"tab": {"kind": "columns", "columns": ["t"]}}}


def spec_error(tmp_path: Path, spec: dict) -> str:
    path = write_spec(tmp_path / "bad.yaml", spec)
    with pytest.raises(UserError) as info:
        plan_custom(load_spec(path), path)
    return str(info.value)


def test_unknown_kind(tmp_path):
    spec = base_spec(tmp_path)
    spec["modalities"]["x"] = {"kind": "bogus"}
    assert "modalities.x.kind: unknown kind 'bogus' (expected one of: columns, raster_values" in spec_error(tmp_path, spec)


def test_unknown_key_and_type(tmp_path):
    spec = base_spec(tmp_path)
    spec["modalities"]["tab"]["colums"] = ["t"]
    spec["modalities"]["img"] = {"kind": "files", "pattern": "{id}.png", "grid": "big"}
    message = spec_error(tmp_path, spec)
    assert "modalities.tab.colums: unknown key (did you mean 'columns'?)" in message
    assert "modalities.img.grid: Input should be a valid integer" in message


def test_missing_column(tmp_path):
    spec = base_spec(tmp_path)
    spec["modalities"]["tab"]["columns"] = ["t", "nope"]
    assert "modalities.tab.columns: column 'nope' not in points.csv (columns: id, lon, lat, cls, t)" in spec_error(tmp_path, spec)
    spec = base_spec(tmp_path)
    spec["points"]["lon"] = "longitude"
    assert "points.lon: column 'longitude' not in points.csv" in spec_error(tmp_path, spec)


def test_missing_raster(tmp_path):
    spec = base_spec(tmp_path)
    spec["modalities"]["env"] = {"kind": "raster_values", "files": {"bio1": "rasters/bio1.tif"}}
    assert f"modalities.env.files.bio1: no such file {tmp_path / 'rasters/bio1.tif'}" in spec_error(tmp_path, spec)


def test_pattern_without_id(tmp_path):
    spec = base_spec(tmp_path)
    spec["modalities"]["img"] = {"kind": "files", "pattern": "images/photo.jpg"}
    assert "modalities.img.pattern: pattern 'images/photo.jpg' has no {id}" in spec_error(tmp_path, spec)
    spec["modalities"]["img"] = {"kind": "files", "pattern": "images/{name}.jpg"}
    assert "unknown placeholder {name}" in spec_error(tmp_path, spec)


def test_every_data_error_is_listed_at_once(tmp_path):
    spec = base_spec(tmp_path)
    spec["modalities"]["a"] = {"kind": "raster_values", "files": ["missing.tif"]}
    spec["modalities"]["b"] = {"kind": "files", "pattern": "nowhere/{id}.npy"}
    message = spec_error(tmp_path, spec)
    assert "2 error(s)" in message and "modalities.a.files: no such file" in message
    assert "modalities.b.pattern: no file found for any of the 3 points" in message


def test_labels_need_exactly_one_kind(tmp_path):
    spec = base_spec(tmp_path)
    spec["points"]["labels"] = {"class": "cls", "species": "cls"}
    assert "points.labels: give exactly one of binary, class, species, presence" in spec_error(tmp_path, spec)


def test_cli_prepare_custom(cli, tmp_path):
    spec = base_spec(tmp_path)
    spec["modalities"]["loc"] = {"kind": "location"}
    good = write_spec(tmp_path / "good.yaml", spec)
    code, out, _ = cli("prepare", "custom", good, tmp_path / "store", "--json")
    assert code == 0 and json.loads(out)["samples"] == 3
    spec["modalities"]["x"] = {"kind": "bogus"}
    code, _, err = cli("prepare", "custom", write_spec(tmp_path / "bad.yaml", spec), tmp_path / "store2")
    assert code == 2 and "unknown kind 'bogus'" in err and "Traceback" not in err
    code, _, err = cli("prepare", "custom", tmp_path / "absent.yaml", tmp_path / "store3")
    assert code == 2 and "no such dataset spec" in err


def test_the_documented_example_is_a_valid_spec():
    from miam_cli.data.custom import DatasetSpec

    doc = (Path(__file__).resolve().parents[1] / "docs" / "dataset-spec.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = DatasetSpec.model_validate(yaml.safe_load(example))
    kinds = {m.kind for m in spec.modalities.values()}
    assert kinds == {"columns", "raster_values", "raster_patches", "files", "timeseries_csv", "cube", "embeddings", "location"}
