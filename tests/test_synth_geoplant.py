"""Tests of the synthetic GeoPlant generator (GLC24 layout, planted truth, fault injection)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from miam_cli.errors import UserError
from miam_cli.synth import geoplant as g

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "geoplant-real" / "glc24"
REAL_ID = 1322301
SEED = 3
N = 120


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def read_meta(raw: Path, split: str) -> list[dict]:
    with g.metadata_path(raw, split).open(newline="") as f:
        return list(csv.DictReader(f))


def header(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return next(csv.reader(f))


def read_latents(raw: Path) -> dict[str, dict[int, dict[str, float]]]:
    out: dict[str, dict[int, dict[str, float]]] = {"train": {}, "test": {}}
    with (raw / "truth_latents.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            out[row["split"]][int(row["surveyId"])] = {
                k: float(v) for k, v in row.items() if k not in ("surveyId", "split")
            }
    return out


def labels(raw: Path, split: str, truth: dict) -> tuple[list[int], np.ndarray]:
    rows = read_meta(raw, split)
    ids = list(dict.fromkeys(int(r["surveyId"]) for r in rows))
    col = {s["speciesId"]: j for j, s in enumerate(truth["species"])}
    pos = {sid: i for i, sid in enumerate(ids)}
    y = np.zeros((len(ids), len(col)), dtype=bool)
    for r in rows:
        if r["speciesId"]:
            y[pos[int(r["surveyId"])], col[int(float(r["speciesId"]))]] = True
    return ids, y


def ndvi(raw: Path, split: str, sid: int) -> np.ndarray:
    rgb = np.asarray(Image.open(g.rgb_patch_path(raw, split, sid)), dtype=np.float64)
    nir = np.asarray(Image.open(g.nir_patch_path(raw, split, sid)), dtype=np.float64)
    return (nir - rgb[..., 0]) / (nir + rgb[..., 0] + 1e-9)


def corr(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> tuple[Path, dict, dict]:
    raw = tmp_path_factory.mktemp("geoplant") / "raw"
    summary = g.synth_geoplant(raw, surveys=N, species=24, seed=SEED)
    truth = json.loads((raw / "truth.json").read_text())
    return raw, summary, truth


# ------------------------------------------------------------------------------------------------
# layout and formats
# ------------------------------------------------------------------------------------------------


def test_layout_and_names(ds):
    raw, summary, truth = ds
    assert summary["surveys"] == N and summary["train_surveys"] + summary["test_surveys"] == N
    assert 0.10 <= summary["test_surveys"] / N <= 0.20
    top = sorted(p.name for p in raw.iterdir())
    assert top == sorted([
        "EnvironmentalData", "GLC24_PA_metadata_test.csv", "GLC24_PA_metadata_train.csv",
        "PA_Test_SatellitePatches_NIR", "PA_Test_SatellitePatches_RGB", "PA_Train_SatellitePatches_NIR",
        "PA_Train_SatellitePatches_RGB", "TimeSeries-Cubes", "truth.json", "truth_latents.csv",
    ])
    cubes = raw / "TimeSeries-Cubes" / "TimeSeries-Cubes"
    assert sorted(p.name for p in cubes.iterdir()) == [
        "GLC24-PA-test-bioclimatic_monthly", "GLC24-PA-test-landsat_time_series",
        "GLC24-PA-train-bioclimatic_monthly", "GLC24-PA-train-landsat_time_series",
    ]
    expected_cols = ["lon", "lat", "year", "geoUncertaintyInM", "areaInM2", "region", "country", "speciesId", "surveyId"]
    n_files = 0
    for split in ("train", "test"):
        assert header(g.metadata_path(raw, split)) == expected_cols
        ids = list(dict.fromkeys(int(r["surveyId"]) for r in read_meta(raw, split)))
        assert len(ids) == summary[f"{split}_surveys"]
        for sid in ids:
            s = str(sid)
            cap = split.capitalize()
            assert (raw / f"PA_{cap}_SatellitePatches_RGB/pa_{split}_patches_rgb/{s[-2:]}/{s[-4:-2]}/{s}.jpeg").is_file()
            assert (raw / f"PA_{cap}_SatellitePatches_NIR/pa_{split}_patches_nir/{s[-2:]}/{s[-4:-2]}/{s}.jpeg").is_file()
            ls_name = (
                f"GLC24-PA-train-landsat-time-series_{s}_cube.pt" if split == "train"
                else f"GLC24-PA-test-landsat_time_series_{s}_cube.pt"
            )
            assert (cubes / f"GLC24-PA-{split}-landsat_time_series" / ls_name).is_file()
            assert (cubes / f"GLC24-PA-{split}-bioclimatic_monthly"
                    / f"GLC24-PA-{split}-bioclimatic_monthly_{s}_cube.pt").is_file()
            n_files += 4
        env = raw / "EnvironmentalData"
        tables = {
            f"Climate/Average 1981-2010/GLC24-PA-{split}-bioclimatic.csv": 19,
            f"SoilGrids/GLC24-PA-{split}-soilgrids.csv": 9,
            f"Elevation/GLC24-PA-{split}-elevation.csv": 1,
            f"LandCover/GLC24-PA-{split}-landcover.csv": 13,
            f"HumanFootprint/GLC24-PA-{split}-human_footprint.csv": 16,
        }
        for rel, ncol in tables.items():
            cols = header(env / rel)
            assert cols[0] == "surveyId" and len(cols) == ncol + 1, rel
            with (env / rel).open() as f:
                assert sorted(int(line.split(",")[0]) for line in list(f)[1:]) == sorted(ids)
    assert header(env / "Climate/Average 1981-2010/GLC24-PA-train-bioclimatic.csv")[1:] == [f"Bio{i}" for i in range(1, 20)]
    assert header(env / "Elevation/GLC24-PA-train-elevation.csv") == ["surveyId", "Elevation"]
    assert header(env / "LandCover/GLC24-PA-train-landcover.csv")[1:] == [f"LandCover-{i}" for i in range(1, 14)]
    soil = header(env / "SoilGrids/GLC24-PA-train-soilgrids.csv")[1:]
    assert soil == [f"Soilgrid-{x}" for x in ("bdod", "cec", "cfvo", "clay", "nitrogen", "phh2o", "sand", "silt", "soc")]
    hf = header(env / "HumanFootprint/GLC24-PA-train-human_footprint.csv")[1:]
    assert all(c.startswith("HumanFootprint-") for c in hf) and len(set(hf)) == 16
    jpegs = list(raw.rglob("*.jpeg"))
    pts = list(raw.rglob("*.pt"))
    assert len(jpegs) + len(pts) == n_files


def test_formats_of_patches_and_cubes(ds):
    raw, _, _ = ds
    sid = int(read_meta(raw, "train")[0]["surveyId"])
    rgb = Image.open(g.rgb_patch_path(raw, "train", sid))
    nir = Image.open(g.nir_patch_path(raw, "train", sid))
    assert (rgb.format, rgb.mode, rgb.size) == ("JPEG", "RGB", (128, 128))
    assert (nir.format, nir.mode, nir.size) == ("JPEG", "L", (128, 128))
    assert np.asarray(rgb).dtype == np.uint8 and np.asarray(rgb).shape == (128, 128, 3)
    ls = torch.load(g.landsat_cube_path(raw, "train", sid), weights_only=True)
    bc = torch.load(g.bioclim_cube_path(raw, "train", sid), weights_only=True)
    assert ls.dtype == torch.float32 and tuple(ls.shape) == (6, 4, 21)
    assert bc.dtype == torch.float32 and tuple(bc.shape) == (4, 19, 12)
    assert not bc.is_contiguous() and bc.stride() == (1, 48, 4)
    assert not ls.is_contiguous() and ls.stride() == (84, 1, 4)
    assert torch.isfinite(ls).all() and torch.isfinite(bc).all()
    # plausible scales, as the real cubes: small integer reflectances, temperatures in K x 10
    assert 0 < ls.min() and ls.max() < 400 and torch.equal(ls, ls.round())
    assert 2300 < bc[1:].min() and bc[1:].max() < 3400
    assert (bc[2] < bc[1]).float().mean() > 0.95 and (bc[3] > bc[1]).float().mean() > 0.95
    assert 50 < bc[0].min() and bc[0].max() < 100000


@pytest.mark.skipif(not REAL.is_dir(), reason="real GLC24 fixture not available")
def test_matches_real_glc24_fixture(ds):
    raw, _, _ = ds
    # The path helpers reproduce every real file's path exactly.
    real_files = {p.relative_to(REAL).as_posix() for p in REAL.rglob("*") if p.is_file()}
    ours = {
        g.rgb_patch_path(REAL, "train", REAL_ID), g.nir_patch_path(REAL, "train", REAL_ID),
        g.landsat_cube_path(REAL, "train", REAL_ID), g.bioclim_cube_path(REAL, "train", REAL_ID),
    }
    assert {p.relative_to(REAL).as_posix() for p in ours} == real_files - {"metadata.csv"}
    # Same metadata columns (the fixture's combined file adds `subset`), speciesId as a float.
    real_cols = [c for c in header(REAL / "metadata.csv") if c != "subset"]
    assert header(g.metadata_path(raw, "train")) == real_cols
    sid = int(read_meta(raw, "train")[0]["surveyId"])
    for real_p, syn_p in (
        (g.landsat_cube_path(REAL, "train", REAL_ID), g.landsat_cube_path(raw, "train", sid)),
        (g.bioclim_cube_path(REAL, "train", REAL_ID), g.bioclim_cube_path(raw, "train", sid)),
    ):
        a = torch.load(real_p, weights_only=True)
        b = torch.load(syn_p, weights_only=True)
        assert (a.dtype, a.shape, a.stride(), a.is_contiguous()) == (b.dtype, b.shape, b.stride(), b.is_contiguous())
        assert a.untyped_storage().nbytes() == b.untyped_storage().nbytes()
        # values on the same scale (within a factor of a few per band / variable)
        ra = a.flatten(1).mean(1) if a.shape[0] == 6 else a.flatten(1).mean(1)
        rb = b.flatten(1).mean(1)
        assert torch.all((rb / ra > 0.2) & (rb / ra < 5.0)), (ra, rb)
    for real_p, syn_p in (
        (g.rgb_patch_path(REAL, "train", REAL_ID), g.rgb_patch_path(raw, "train", sid)),
        (g.nir_patch_path(REAL, "train", REAL_ID), g.nir_patch_path(raw, "train", sid)),
    ):
        a, b = Image.open(real_p), Image.open(syn_p)
        assert (a.format, a.mode, a.size, a.layer) == (b.format, b.mode, b.size, b.layer)


def test_short_ids_and_metadata_quirks(ds):
    raw, summary, truth = ds
    shorts = {"train": [], "test": []}
    for split in ("train", "test"):
        rows = read_meta(raw, split)
        for r in rows:
            assert r["speciesId"] == "" or (r["speciesId"].endswith(".0") and float(r["speciesId"]) > 0)
            assert -5 <= float(r["lon"]) <= 15 and 42 <= float(r["lat"]) <= 56
            assert 2017 <= int(r["year"]) <= 2021
        shorts[split] = sorted({int(r["surveyId"]) for r in rows if len(r["surveyId"]) == 3})
    assert shorts["train"] and shorts["test"]
    for split, ids in shorts.items():
        for sid in ids:
            p = g.rgb_patch_path(raw, split, sid)
            assert p.parent.name == str(sid)[0] and p.parent.parent.name == str(sid)[1:]
            assert p.is_file() and g.nir_patch_path(raw, split, sid).is_file()
    # surveys with no species present: one row, empty speciesId, listed in truth
    train = read_meta(raw, "train")
    empty = [int(r["surveyId"]) for r in train if r["speciesId"] == ""]
    assert empty and len(empty) == len(set(empty))
    assert all(sum(int(r["surveyId"]) == sid for r in train) == 1 for sid in empty)
    assert sorted(truth["empty_surveys"]["train"]) == sorted(empty)


# ------------------------------------------------------------------------------------------------
# determinism
# ------------------------------------------------------------------------------------------------


def test_same_seed_identical_bytes_different_seed_differs(tmp_path):
    a = all_files(_gen(tmp_path / "a", seed=11))
    b = all_files(_gen(tmp_path / "b", seed=11, workers=1))
    c = all_files(_gen(tmp_path / "c", seed=12))
    assert a.keys() == b.keys() and a == b
    assert a != c
    assert a["GLC24_PA_metadata_train.csv"] != c["GLC24_PA_metadata_train.csv"]
    # pixels and cubes differ too (compare any file of each kind)
    for ext in (".jpeg", ".pt"):
        pa = sorted(v for k, v in a.items() if k.endswith(ext))
        pc = sorted(v for k, v in c.items() if k.endswith(ext))
        assert pa != pc


def test_version_2_reproduces_the_v2_study_data(tmp_path):
    """`--generator-version 2` writes the v2 study's tables and truth byte for byte (hash taken from the
    generator before v3 existed); images and cubes are left out of the hash (codec builds may differ)."""
    import hashlib

    root = _gen(tmp_path / "v2", seed=11, workers=1, version=2)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".csv", ".json"):
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    assert h.hexdigest() == "7759d76c556fa5835a82d34ba819284e45018d205e7613376b12288e9229c001"
    assert json.loads((root / "truth.json").read_text())["generator_version"] == 2


def test_version_3_is_the_papers_regime_in_its_latents(tmp_path):
    """v3: Sentinel-2's latent v explains much more of every species than in v2, and is more redundant
    with the tabular data (three productivity columns); checked on the truth, not on trained models."""
    raw = _gen(tmp_path / "v3", seed=3, surveys=400)
    truth = json.loads((raw / "truth.json").read_text())
    assert truth["generator_version"] == 3 and truth["latents"]["ndvi_env_corr"] == 0.9
    prod_cols = [c["column"] for c in truth["env_signal_columns"] if c["latent"] == "productivity"]
    assert prod_cols == ["Soilgrid-soc", "Soilgrid-nitrogen", "Soilgrid-cec"]
    b = np.array([abs(s["weights"]["ndvi"]) for s in truth["species"]])
    a = np.array([s["weights"]["tabular"] for s in truth["species"]])
    assert (b > a).mean() > 0.9  # v carries more weight than the niche for almost every species
    with pytest.raises(UserError, match="version"):
        g.synth_geoplant(tmp_path / "bad", surveys=20, version=7)


def _gen(raw: Path, seed: int, surveys: int = 30, **kw) -> Path:
    g.synth_geoplant(raw, surveys=surveys, species=8, seed=seed, **kw)
    return raw


# ------------------------------------------------------------------------------------------------
# planted truth
# ------------------------------------------------------------------------------------------------


def test_truth_json(ds):
    raw, _, truth = ds
    for key in ("seed", "surveys", "species", "event_year", "informative_bands", "noise_bands", "patch_decay",
                "env_columns_with_signal", "description"):
        assert key in truth
    assert truth["seed"] == SEED and truth["surveys"] == N and truth["event_year"] == 2003
    assert truth["informative_bands"] == ["red", "nir"] and truth["noise_bands"] == ["green", "blue"]
    assert len(truth["species"]) == 24 == truth["species_count"]
    assert len(truth["description"]) > 200
    assert isinstance(truth["patch_decay"]["description"], str)
    ids = [s["speciesId"] for s in truth["species"]]
    assert len(set(ids)) == 24
    present = {int(float(r["speciesId"])) for s in ("train", "test") for r in read_meta(raw, s) if r["speciesId"]}
    assert present <= set(ids)
    for s in truth["species"]:
        assert set(s["weights"]) == {"tabular", "ndvi", "event"}
        lo, hi = g.GENERATOR_VERSIONS[truth["generator_version"]].b_range
        assert lo <= abs(s["weights"]["ndvi"]) <= hi
        assert 0.10 <= s["prevalence"] <= 0.30
    assert 0 < sum(s["weights"]["event"] != 0 for s in truth["species"]) < 24
    tab_cols = {c for t in g.ENV_TABLES.values() for c in t[2]}
    assert set(truth["env_columns_with_signal"]) <= tab_cols
    lat = read_latents(raw)
    assert len(lat["train"]) + len(lat["test"]) == N


def test_prevalence_in_range(ds):
    raw, _, truth = ds
    _, y = labels(raw, "train", truth)
    prev = y.mean(axis=0)
    assert 0.10 <= prev.mean() <= 0.32
    assert (prev > 0.0).all() and (prev < 0.5).all()
    obs = np.array([s["observed_prevalence"]["train"] for s in truth["species"]])
    assert np.allclose(obs, prev, atol=1e-6)


def test_tabular_columns_carry_env_latents(ds):
    raw, _, truth = ds
    lat = read_latents(raw)["train"]
    tables = {}
    for t in g.ENV_TABLES:
        with g.env_table_path(raw, t, "train").open(newline="") as f:
            for row in csv.DictReader(f):
                tables.setdefault(int(row.pop("surveyId")), {}).update(row)
    ids = sorted(lat)
    for item in truth["env_signal_columns"]:
        x = [float(tables[i][item["column"]]) for i in ids]
        assert corr(x, [lat[i][item["latent"]] for i in ids]) > 0.95, item["column"]
    # a noise column is unrelated to every latent
    x = [float(tables[i]["Bio7"]) for i in ids]
    for name in ("temperature", "moisture", "ndvi", "event"):
        assert abs(corr(x, [lat[i][name] for i in ids])) < 0.5


def test_ndvi_centre_carries_latent_edges_do_not(ds):
    raw, _, _ = ds
    lat = read_latents(raw)["train"]
    ids = sorted(lat)
    centre, corners = [], []
    for sid in ids:
        nd = ndvi(raw, "train", sid)
        centre.append(nd[48:80, 48:80].mean())
        corners.append(np.mean([nd[:32, :32].mean(), nd[:32, -32:].mean(), nd[-32:, :32].mean(), nd[-32:, -32:].mean()]))
    v = [lat[i]["ndvi"] for i in ids]
    c_centre, c_edge = corr(centre, v), corr(corners, v)
    assert c_centre > 0.75
    assert abs(c_edge) < 0.35
    assert c_centre - abs(c_edge) > 0.5


def test_green_blue_are_pure_noise(ds):
    raw, _, truth = ds
    # Structural: the same survey drawn with another vegetation latent changes red/NIR only.
    rgb1, nir1 = g._make_patches(SEED, 123456, -2.0)
    rgb2, nir2 = g._make_patches(SEED, 123456, 2.0)
    assert np.array_equal(rgb1[..., 1:], rgb2[..., 1:])
    assert not np.array_equal(rgb1[..., 0], rgb2[..., 0]) and not np.array_equal(nir1, nir2)
    # Statistical: green/blue are unrelated to the labels; central NDVI is not.
    ids, y = labels(raw, "train", truth)
    stats = {"green": [], "blue": [], "ndvi": []}
    for sid in ids:
        rgb = np.asarray(Image.open(g.rgb_patch_path(raw, "train", sid)), dtype=np.float64)
        stats["green"].append(rgb[48:80, 48:80, 1].mean())
        stats["blue"].append(rgb[48:80, 48:80, 2].mean())
        stats["ndvi"].append(ndvi(raw, "train", sid)[48:80, 48:80].mean())
    mean_abs = {
        k: np.mean([abs(corr(vals, y[:, j])) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(ids)])
        for k, vals in stats.items()
    }
    assert mean_abs["green"] < 0.15 and mean_abs["blue"] < 0.15
    assert mean_abs["ndvi"] > 1.5 * max(mean_abs["green"], mean_abs["blue"])
    lat = read_latents(raw)["train"]
    for band in ("green", "blue"):
        for name in ("ndvi", "event", "temperature"):
            assert abs(corr(stats[band], [lat[i][name] for i in ids])) < 0.3


def test_event_year_stands_out_for_high_event_latent(ds):
    raw, _, truth = ds
    lat = read_latents(raw)["train"]
    high = [i for i in sorted(lat) if abs(lat[i]["event"]) > 1.0]
    assert len(high) >= 10
    ey = truth["event_year"]
    ls_anom, bc_anom = [], []
    for sid in high:
        ls = torch.load(g.landsat_cube_path(raw, "train", sid), weights_only=True).numpy()
        nir_q3 = ls[3, 2, :]  # [band nir, quarter 3, years]
        ls_anom.append(np.abs(nir_q3 - np.median(nir_q3)))
        bc = torch.load(g.bioclim_cube_path(raw, "train", sid), weights_only=True).numpy()
        tmax_summer = bc[3, :, 5:8].mean(axis=1)  # [tasmax, years, Jun-Aug]
        bc_anom.append(np.abs(tmax_summer - np.median(tmax_summer)))
    ls_anom, bc_anom = np.mean(ls_anom, axis=0), np.mean(bc_anom, axis=0)
    li, bi = g.LANDSAT_YEARS.index(ey), g.BIOCLIM_YEARS.index(ey)
    assert int(np.argmax(ls_anom)) == li and ls_anom[li] > 2.5 * np.delete(ls_anom, li).max()
    assert int(np.argmax(bc_anom)) == bi and bc_anom[bi] > 2.5 * np.delete(bc_anom, bi).max()
    # direction: a heatwave lowers NIR and raises tasmax
    ids = sorted(lat)
    e = [lat[i]["event"] for i in ids]
    d = []
    for sid in ids:
        ls = torch.load(g.landsat_cube_path(raw, "train", sid), weights_only=True).numpy()
        d.append(ls[3, 2, li] - np.median(ls[3, 2, :]))
    assert corr(d, e) < -0.7


# ------------------------------------------------------------------------------------------------
# API behaviour
# ------------------------------------------------------------------------------------------------


def test_progress_rerun_and_refusals(tmp_path):
    calls = []
    raw = tmp_path / "raw"
    s = g.synth_geoplant(raw, surveys=12, species=5, seed=1, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (12, 12) and [c[0] for c in calls] == list(range(1, 13))
    assert s["surveys"] == 12 and (raw / "truth.json").is_file()
    before = all_files(raw)
    g.synth_geoplant(raw, surveys=12, species=5, seed=1)  # rerun over our own output: replaced, identical
    assert all_files(raw) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        g.synth_geoplant(foreign, surveys=12)
    for kw in ({"surveys": 3}, {"species": 0}, {"test_fraction": 1.0}, {"event_year": 2019}):
        with pytest.raises(UserError):
            g.synth_geoplant(tmp_path / "bad", **kw)


def test_no_test_split(tmp_path):
    raw = tmp_path / "raw"
    s = g.synth_geoplant(raw, surveys=12, species=4, seed=2, test_fraction=0.0)
    assert s["test_surveys"] == 0
    assert g.metadata_path(raw, "test").read_text().strip().split("\n") == [",".join(g.METADATA_COLUMNS)]
    assert (raw / "PA_Test_SatellitePatches_RGB" / "pa_test_patches_rgb").is_dir()


def test_inject_faults(tmp_path):
    raw = _gen(tmp_path / "raw", seed=5, surveys=20)
    with pytest.raises(ValueError, match="unknown fault"):
        g.inject_faults(raw, ["bogus"], seed=0)
    recs = g.inject_faults(raw, list(g.FAULT_KINDS), seed=0)
    kinds = {r["kind"] for r in recs}
    assert kinds == set(g.FAULT_KINDS)
    by = {}
    for r in recs:
        by.setdefault(r["kind"], []).append(r)
        assert r["split"] == "train" and isinstance(r["surveyId"], int) and (raw / r["file"]).parent.exists()
    assert len({by[k][0]["surveyId"] for k in ("missing_file", "corrupt_file", "wrong_shape", "nan_values")}) == 4
    assert not (raw / by["missing_file"][0]["file"]).exists()
    with pytest.raises(OSError):
        np.asarray(Image.open(raw / by["corrupt_file"][0]["file"]))
    t = torch.load(raw / by["wrong_shape"][0]["file"], weights_only=True)
    assert tuple(t.shape) == (6, 4, 20)
    nan_files = {Path(r["file"]).parent.name: r for r in by["nan_values"]}
    ls = torch.load(raw / next(r["file"] for k, r in nan_files.items() if "landsat" in k), weights_only=True)
    bc = torch.load(raw / next(r["file"] for k, r in nan_files.items() if "bioclimatic" in k), weights_only=True)
    year = by["nan_values"][0]["year"]
    assert torch.isnan(ls[:, :, year - 2000]).all() and torch.isnan(ls).sum() == 24
    assert torch.isnan(bc[:, year - 2000, :]).all() and torch.isnan(bc).sum() == 48
    assert ls.stride() == (84, 1, 4) and bc.stride() == (1, 48, 4)
    empties = sorted(int(r["surveyId"]) for r in read_meta(raw, "train") if r["speciesId"] == "")
    assert sorted(r["surveyId"] for r in by["empty_species"]) == empties and empties
