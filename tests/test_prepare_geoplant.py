"""`miam prepare geoplant`: synth round trip, the real GLC24/GLC25 sample files, faults, strict,
resume, shards and workers."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from miam_cli.cli.main import main
from miam_cli.data.geoplant import GeoPlantOptions, plan_geoplant, short_dirs
from miam_cli.data.prepare import run_prepare
from miam_cli.data.readers import patch_tokens
from miam_cli.store.reader import TokenStore
from miam_cli.store.writer import StoreWriter
from miam_cli.synth.geoplant import inject_faults, synth_geoplant

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "geoplant-real"


def _cli(args, capsys=None):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    path = tmp_path_factory.mktemp("raw") / "geoplant"
    synth_geoplant(path, surveys=120, species=8, seed=3)
    return path


@pytest.fixture(scope="module")
def store(raw, tmp_path_factory):
    dest = tmp_path_factory.mktemp("store") / "s"
    assert _cli(["prepare", "geoplant", raw, dest, "--chunk-size", "32"]) == 0
    return TokenStore(dest)


def _metadata(raw):
    meta = pd.concat([pd.read_csv(raw / f"GLC24_PA_metadata_{s}.csv").assign(subset=s) for s in ("train", "test")])
    meta["surveyId"] = meta["surveyId"].astype(str)
    return meta


def test_labels_equal_the_metadata_species(raw, store):
    meta = _metadata(raw)
    classes = store.classes.set_index("class_index")["original_id"]
    for row in store.samples.itertuples():
        got = sorted(classes[int(k)] for k in row.labels)
        want = meta.loc[meta["surveyId"] == row.sample_id, "speciesId"].dropna()
        want = sorted({str(int(x)) for x in want} & set(classes))
        assert got == want, row.sample_id
    assert store.meta.num_samples == meta["surveyId"].nunique()
    assert set(store.samples["split"]) == {"train", "val", "test"}


def test_tokens_equal_the_raw_pixels_and_cubes(raw, store):
    rows = store.samples.index[store.samples["has_sentinel2"]][:5]
    for r in rows:
        sid = store.samples.loc[r, "sample_id"]
        subset = "train" if (raw / "PA_Train_SatellitePatches_RGB").joinpath("pa_train_patches_rgb", *short_dirs(sid), f"{sid}.jpeg").exists() else "test"
        cap = subset.capitalize()
        rgb = np.asarray(Image.open(raw / f"PA_{cap}_SatellitePatches_RGB" / f"pa_{subset}_patches_rgb" / Path(*short_dirs(sid)) / f"{sid}.jpeg"), dtype=np.float32)
        nir = np.asarray(Image.open(raw / f"PA_{cap}_SatellitePatches_NIR" / f"pa_{subset}_patches_nir" / Path(*short_dirs(sid)) / f"{sid}.jpeg"), dtype=np.float32)
        values, valid = store.read("sentinel2", [r], normalize=False)
        assert valid.all()
        # token band*16 + row*4 + col holds the 32x32 block (row, col) of that band, row-major
        np.testing.assert_array_equal(values[0, 0], rgb[:32, :32, 0].ravel())  # red, r0c0
        np.testing.assert_array_equal(values[0, 3 * 16 + 2 * 4 + 1], nir[64:96, 32:64].ravel())  # nir, r2c1
        np.testing.assert_array_equal(values[0, 16 + 15], rgb[96:, 96:, 1].ravel())  # green, r3c3
        cube_dir = raw / "TimeSeries-Cubes" / "TimeSeries-Cubes"
        landsat = torch.load(next(cube_dir.glob(f"GLC24-PA-{subset}-landsat*/*_{sid}_cube.pt")), weights_only=True).numpy()
        lv, lok = store.read("landsat", [r], normalize=False)
        finite = np.isfinite(landsat).all(axis=(0, 1))
        np.testing.assert_array_equal(lok[0], finite)
        np.testing.assert_allclose(lv[0, 5][finite[5]] if finite[5] else [], landsat[:, :, 5].ravel()[finite[5]] if finite[5] else [])
        bio = torch.load(next(cube_dir.glob(f"GLC24-PA-{subset}-bioclimatic*/*_{sid}_cube.pt")), weights_only=True).numpy()
        bv, _ = store.read("bioclim", [r], normalize=False)
        np.testing.assert_allclose(bv[0, 7], bio[:, 7, :].ravel())  # year 2007: var*12 + month


def test_tabular_tokens_equal_the_csv_and_normalisation_is_from_train(raw, store):
    spec = store.meta.modalities["tabular"]
    assert "bio1" in spec.axes["variable"] and "elevation" in spec.axes["variable"]
    table = pd.concat([pd.read_csv(raw / "EnvironmentalData" / "Climate" / "Average 1981-2010" / f"GLC24-PA-{s}-bioclimatic.csv") for s in ("train", "test")])
    table["surveyId"] = table["surveyId"].astype(str)
    bio1 = table.set_index("surveyId")["Bio1"]
    t = spec.axes["variable"].index("bio1")
    values, valid = store.read("tabular", np.arange(store.meta.num_samples), normalize=False)
    expected = bio1.reindex(store.samples["sample_id"]).to_numpy(np.float32)
    np.testing.assert_array_equal(valid[:, t], np.isfinite(expected))
    np.testing.assert_allclose(values[valid[:, t], t, 0], expected[np.isfinite(expected)])
    train = (store.samples["split"] == "train").to_numpy() & valid[:, t]
    assert spec.normalization.mean[t] == pytest.approx(values[train, t, 0].mean(), rel=1e-5)


@pytest.mark.parametrize("kind,modality", [("missing_file", "sentinel2"), ("corrupt_file", "sentinel2"),
                                           ("wrong_shape", "landsat"), ("nan_values", "landsat")])
def test_each_fault_marks_the_modality_missing_and_is_counted(raw, tmp_path, kind, modality):
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    record = inject_faults(copy, [kind], seed=1)[0]
    assert _cli(["prepare", "geoplant", copy, tmp_path / "s"]) == 0
    store = TokenStore(tmp_path / "s")
    report = json.loads((tmp_path / "s" / "prepare-report.json").read_text())
    hits = [f for f in report["faults"] if f["sample"] == str(record["surveyId"]) and f["kind"] == kind and f["modality"] == modality]
    assert hits, report["faults"][:5]
    row = int(np.flatnonzero(store.samples["sample_id"] == str(record["surveyId"]))[0])
    _, valid = store.read(modality, [row])
    if kind == "nan_values":
        assert 0 < valid.sum() < valid.size  # only the NaN year is missing
    else:
        assert not valid.any() and not store.samples.loc[row, f"has_{modality}"]
    assert report["counts"][kind] >= 1
    assert _cli(["prepare", "geoplant", copy, tmp_path / "strict", "--strict"]) == 2
    assert not (tmp_path / "strict" / "store.json").exists()


def test_decoding_faults_name_the_file_read(raw, tmp_path):
    """The shared fault path: patches of two sizes are a wrong shape, a cube found under its other spelling is
    the file a fault names, a table cell that is not a number is that survey's fault."""
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    rgb = next(copy.glob("PA_Train_SatellitePatches_RGB/**/*.jpeg"))
    nir = copy / str(rgb.relative_to(copy)).replace("RGB", "NIR").replace("rgb", "nir")
    Image.new("L", (64, 64), 3).save(nir, "JPEG")
    cube = next(copy.glob("TimeSeries-Cubes/**/*landsat-time-series_*_cube.pt"))
    renamed = cube.with_name(cube.name.replace("landsat-time-series", "landsat_time_series"))
    cube.rename(renamed)
    renamed.write_bytes(b"not a cube")
    elevation = next(copy.rglob("GLC24-PA-train-elevation.csv"))
    lines = elevation.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",abc"
    elevation.write_text("\n".join(lines) + "\n")
    plan, decoder = plan_geoplant(copy, GeoPlantOptions())
    ids = plan.samples["sample_id"].tolist()
    data = decoder(range(len(ids)))
    faults = {(f["kind"], f["modality"], f["sample"]): f for f in data.faults}
    sid = {p: p.stem.split("_")[-2] if p.name.endswith("_cube.pt") else p.stem for p in (rgb, renamed)}
    assert faults[("wrong_shape", "sentinel2", sid[rgb])]["file"] == str(rgb)
    assert faults[("corrupt_file", "landsat", sid[renamed])]["file"] == str(renamed)
    bad = faults[("bad_value", "tabular", lines[1].split(",")[0])]
    assert bad["file"] == str(elevation) and bad["detail"] == "Elevation: not a number"
    assert len(data.faults) == 3
    for kind, m, s in faults:
        assert not data.valid[m][ids.index(s)].all()


def test_empty_species_surveys_are_kept_with_no_labels(raw, store):
    meta = _metadata(raw)
    empty = set(meta.groupby("surveyId")["speciesId"].apply(lambda s: s.isna().all()).pipe(lambda s: s[s].index))
    assert empty, "the generator writes surveys without species"
    rows = store.samples[store.samples["sample_id"].isin(empty)]
    assert len(rows) == len(empty) and all(len(x) == 0 for x in rows["labels"])


def test_resume_shards_and_workers_give_the_same_store(raw, store, tmp_path):
    plan, decoder = plan_geoplant(raw, GeoPlantOptions())
    original = StoreWriter.write_chunk

    def crash(self, chunk, data):
        if chunk == 2:
            raise RuntimeError("injected crash")
        return original(self, chunk, data)

    StoreWriter.write_chunk = crash
    try:
        with pytest.raises(RuntimeError):
            run_prepare(plan, decoder, tmp_path / "resumed", chunk_size=32)
    finally:
        StoreWriter.write_chunk = original
    assert _cli(["prepare", "geoplant", raw, tmp_path / "resumed", "--chunk-size", "32"]) == 0
    for i in range(3):
        assert _cli(["prepare", "geoplant", raw, tmp_path / "sharded", "--chunk-size", "32", "--shard", f"{i}/3"]) == 0
    assert _cli(["prepare", "geoplant", raw, tmp_path / "workers", "--chunk-size", "32", "--workers", "2"]) == 0
    for other in ("resumed", "sharded", "workers"):
        _assert_same(store, TokenStore(tmp_path / other))


def test_a_complete_store_is_not_overwritten(raw, store, capsys):
    assert _cli(["prepare", "geoplant", raw, store.path]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_bad_raw_dir_is_a_clear_error(tmp_path, capsys):
    assert _cli(["prepare", "geoplant", tmp_path / "nope", tmp_path / "s"]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _cli(["prepare", "geoplant", tmp_path / "empty", tmp_path / "s"]) == 2
    assert "no GeoPlant files" in capsys.readouterr().err


@pytest.mark.skipif(not FIXTURES.exists(), reason="shared fixtures absent")
def test_real_glc24_sample_prepares(tmp_path):
    assert _cli(["prepare", "geoplant", FIXTURES / "glc24", tmp_path / "s"]) == 0
    store = TokenStore(tmp_path / "s")
    meta = pd.read_csv(FIXTURES / "glc24" / "metadata.csv")
    assert store.meta.num_samples == meta["surveyId"].nunique()
    assert store.meta.task.num_classes == meta["speciesId"].dropna().map(lambda x: str(int(x))).pipe(
        lambda s: s[meta.loc[s.index, "surveyId"].isin(store.samples.loc[store.samples["split"] == "train", "sample_id"].astype(int))]).nunique()
    assert "tabular" not in store.modalities  # the sample ships no environmental CSVs
    row = int(np.flatnonzero(store.samples["sample_id"] == "1322301")[0])
    for m in ("sentinel2", "landsat", "bioclim"):
        assert store.samples[f"has_{m}"].sum() == 1 and store.samples.loc[row, f"has_{m}"]
    rgb = np.asarray(Image.open(FIXTURES / "glc24/PA_Train_SatellitePatches_RGB/pa_train_patches_rgb/01/23/1322301.jpeg"), np.float32)
    values, _ = store.read("sentinel2", [row], normalize=False)
    np.testing.assert_array_equal(values[0, :16], patch_tokens(rgb.transpose(2, 0, 1), 4)[:16])
    cube = torch.load(next((FIXTURES / "glc24").rglob("*landsat-time-series_1322301_cube.pt")), weights_only=True)
    lv, _ = store.read("landsat", [row], normalize=False)
    np.testing.assert_allclose(lv[0], cube.permute(2, 0, 1).reshape(21, 24).numpy())
    report = json.loads((tmp_path / "s" / "prepare-report.json").read_text())
    assert report["counts"]["missing_file"] == 3 * (store.meta.num_samples - 1)


@pytest.mark.skipif(not FIXTURES.exists(), reason="shared fixtures absent")
def test_real_glc25_sample_prepares(tmp_path):
    assert _cli(["prepare", "geoplant", FIXTURES / "glc25", tmp_path / "s", "--layout", "auto"]) == 0
    store = TokenStore(tmp_path / "s")
    assert store.meta.provenance["layout"] == "glc25"
    spec = store.meta.modalities["sentinel2"]
    assert spec.tokens == 64 and spec.features == 16 * 16  # 64 px GeoTIFF, 4x4 grid
    row = int(np.flatnonzero(store.samples["sample_id"] == "5000108")[0])
    import rasterio

    with rasterio.open(FIXTURES / "glc25/SatelitePatches/PA-test/08/01/5000108.tiff") as src:
        image = src.read().astype(np.float32)
    values, valid = store.read("sentinel2", [row], normalize=False)
    assert valid.all()
    np.testing.assert_array_equal(values[0], patch_tokens(image, 4))
    assert store.samples["has_landsat"].sum() == 1 and store.samples["has_bioclim"].sum() == 1


def _assert_same(a, b):
    pd.testing.assert_frame_equal(a.samples, b.samples)
    for m in a.modalities:
        va, oa = a.read(m, np.arange(a.meta.num_samples), normalize=False)
        vb, ob = b.read(m, np.arange(b.meta.num_samples), normalize=False)
        np.testing.assert_array_equal(va, vb)
        np.testing.assert_array_equal(oa, ob)
        assert a.meta.modalities[m] == b.meta.modalities[m]
