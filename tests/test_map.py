"""`miam map`: pixels are samples computed per pixel, tiled, resumable, shardable, written as a COG.

The reference for a pixel is `miam predict` on a store prepared (`prepare custom --like`) from points at
the pixel centres: the two paths share only the model, so their agreement checks the grid, the
per-pixel tokens and the normalisation. Contributions are checked against efficiency and against the
Shapley formula on predictions with one modality visible.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

from miam_cli import api
from miam_cli.data.custom import load_spec, plan_custom
from miam_cli.data.prepare import run_prepare
from miam_cli.errors import UserError
from miam_cli.maps.run import MapRequest, run_map

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

GLC23 = Path(__file__).resolve().parents[2] / "shared/fixtures/geoplant-real/glc23-sample"
# 22 x 12 pixels of 0.1 deg: the sea corner (no climate data), the Sentinel-2 swath edge at 4.4 E, and a strip
# east of 5 E and south of 43 N where no raster has data (nodata)
BBOX = [3.0, 42.9, 5.2, 44.1]


def map_spec(folder: Path, dataset: Path, **grid) -> Path:
    # the dataset spec lies in a fixture's folder, outside this spec's: allowed explicitly
    spec = {"dataset": str(dataset), "grid": grid or {"bbox": BBOX, "resolution": 0.1, "crs": "EPSG:4326"},
            "allow_outside_root": True}
    path = folder / "map.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def read_map(path: Path) -> tuple[np.ndarray, list[str], dict, rasterio.Affine]:
    with rasterio.open(path) as src:
        return src.read(), list(src.descriptions), src.tags(), src.transform


def centre_store(dataset: Path, like: Path, transform, shape, folder: Path, modalities: dict | None = None) -> Path:
    """Points at every pixel centre (unlabelled), prepared with --like: the reference for the map."""
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    lon, lat = transform.c + (cols.ravel() + 0.5) * transform.a, transform.f + (rows.ravel() + 0.5) * transform.e
    pd.DataFrame({"id": [f"r{r}c{c}" for r, c in zip(rows.ravel(), cols.ravel())], "lon": lon, "lat": lat, "species": ""}) \
        .to_csv(folder / "centres.csv", index=False)
    spec = yaml.safe_load(dataset.read_text())
    spec.update(name="centres", root=str(dataset.parent), allow_outside_root=True)  # the points lie in `folder`, the data beside `dataset`
    spec["points"] = {"path": str(folder / "centres.csv"), "labels": {"species": "species"}}
    if modalities is not None:
        spec["modalities"] = modalities
    (folder / "centres.yaml").write_text(yaml.safe_dump(spec))
    plan, decoder = plan_custom(load_spec(folder / "centres.yaml"), folder / "centres.yaml", like=like)
    run_prepare(plan, decoder, folder / "centres-store")
    return folder / "centres-store"


def predicted(run, store: Path, folder: Path, species: list[str], subsets=None) -> pd.DataFrame:
    res = api.predict(run, store, split="predict", species=species, subsets=subsets, out=folder / f"p{len(list(folder.glob('p*.parquet')))}.parquet")
    return res.table.set_index("sample_id")


@pytest.fixture(scope="module")
def contribution_map(landscape, landscape_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("map")
    spec = map_spec(folder, landscape / "spec.yaml")
    res = api.predict_map(landscape_run, spec, out=folder / "map.tif", species=["114", "135"], contributions=True, tile=16)
    return folder, res


def test_map_pixels_equal_predict_at_the_pixel_centres(contribution_map, landscape, landscape_run, landscape_store):
    folder, res = contribution_map
    bands, names, tags, transform = read_map(res.path)
    assert names == ["p(114)", "p(135)", "richness", "coverage", "shapley(env)", "shapley(sentinel2)"]
    assert bands.shape == (6, 12, 22) and res.tiles == 2  # 16 px tiles: 22 x 12 px is two of them
    store = centre_store(landscape / "spec.yaml", landscape_store, transform, bands.shape[1:], folder)
    table = predicted(landscape_run, store, folder, ["114", "135"])
    for b, s in enumerate(("114", "135")):
        expected = table[s].reindex([f"r{r}c{c}" for r in range(12) for c in range(22)]).to_numpy().reshape(12, 22)
        valid = np.isfinite(bands[b])
        np.testing.assert_allclose(bands[b][valid], expected[valid], atol=1e-5, rtol=0)
    # nodata exactly where no modality has data: east of 5 E is beyond every raster
    coverage = bands[3]
    lon = transform.c + (np.arange(22) + 0.5) * transform.a
    lat = transform.f + (np.arange(12) + 0.5) * transform.e
    assert np.isnan(coverage[:, lon > 5.0]).all() and np.isnan(bands[:, :, lon > 5.0]).all()
    assert np.isnan(bands[:, lat < 43.0]).all()
    # env (bit 1) and sentinel2 (bit 2): both in the west, env alone east of the swath edge, sentinel2 alone at sea
    assert {1.0, 2.0, 3.0} <= set(np.unique(coverage[np.isfinite(coverage)]))
    assert (coverage[np.ix_(lat > 43.0, (lon > 4.5) & (lon < 5.0))] == 1).all()
    assert json.loads(tags["coverage_bits"]) == {"env": 1, "sentinel2": 2}


def test_contribution_bands_are_exact_shapley_values(contribution_map, landscape, landscape_run, landscape_store):
    folder, res = contribution_map
    bands, _, tags, transform = read_map(res.path)
    valid = np.isfinite(bands[3])
    v_all = bands[:2].mean(axis=0)
    run = api.load_run(landscape_run)
    import torch

    with torch.no_grad():  # v(none): nothing visible (the CLS token alone), the same at every pixel
        empty = {m.name: torch.zeros(1, m.tokens, m.features) for m in run.layout.modalities}
        keep = {m: torch.zeros(1, v.shape[1], dtype=torch.bool) for m, v in empty.items()}
        v_none = torch.sigmoid(run.model(empty, keep))[0, [run.store.find_class("114"), run.store.find_class("135")]].mean().item()
    phi = bands[4:]
    np.testing.assert_allclose(phi.sum(axis=0)[valid], (v_all - v_none)[valid], atol=1e-5)
    assert float(tags["efficiency_max_gap"]) < 1e-9 and res.efficiency_gap < 1e-9
    # a modality with no data at a pixel is a null player there: exactly zero
    coverage = bands[3]
    assert (phi[1][coverage == 1] == 0).all() and (phi[0][coverage == 2] == 0).all()
    # the Shapley formula for two players, from predictions with one modality visible
    store = Path(folder / "centres-store")
    one = {g: predicted(run, store, folder, ["114", "135"], subsets=[g])[["114", "135"]].mean(axis=1) for g in ("env", "sentinel2")}
    ids = [f"r{r}c{c}" for r in range(12) for c in range(22)]
    v_env, v_s2 = (one[g].reindex(ids).to_numpy().reshape(12, 22) for g in ("env", "sentinel2"))
    both = coverage == 3
    expected_env = 0.5 * ((v_env - v_none) + (v_all - v_s2))
    np.testing.assert_allclose(phi[0][both], expected_env[both], atol=2e-5)
    # where Sentinel-2 exists, it matters for these NDVI species: its contribution varies with the vegetation
    assert np.abs(phi[1][both]).max() > 0.05


def test_map_is_a_cloud_optimised_geotiff(contribution_map):
    _, res = contribution_map
    with rasterio.open(res.path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.profile["tiled"] and src.crs.to_epsg() == 4326 and np.isnan(src.nodata)
        assert src.res == pytest.approx((0.1, 0.1)) and src.bounds.left == pytest.approx(3.0) and src.bounds.top == pytest.approx(44.1)
    assert not Path(f"{res.path}.parts").exists()


@pytest.fixture(scope="module")
def small_tiles_map(landscape, landscape_run, tmp_path_factory) -> Path:
    """The contribution map in 8 px tiles, uninterrupted: what a resumed or sharded run must reproduce bit for bit
    (the model's last bits depend on which pixels share a batch, so the reference has the same tiles)."""
    folder = tmp_path_factory.mktemp("small-tiles")
    spec = map_spec(folder, landscape / "spec.yaml")
    return api.predict_map(landscape_run, spec, out=folder / "map.tif", species=["114", "135"], contributions=True, tile=8).path


def test_a_killed_map_resumes_tile_by_tile(landscape, landscape_run, small_tiles_map, tmp_path):
    spec = map_spec(tmp_path, landscape / "spec.yaml")
    run = api.load_run(landscape_run)
    req = MapRequest(spec, tmp_path / "map.tif", ["114", "135"], True, tile=8)

    def killed_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_map(run, req, progress=killed_after_two)
    assert not (tmp_path / "map.tif").exists()  # nothing claims to be the complete map
    parts = sorted(p.name for p in (tmp_path / "map.tif.parts").iterdir())
    assert parts == ["plan.json", "tile-000000.npz", "tile-000001.npz"]
    (tmp_path / "map.tif.parts" / ".tile-000002.npz.xyz.tmp").write_bytes(b"half a tile")  # as a kill mid-write leaves
    # other settings over the unfinished tiles: refused, nothing lost
    with pytest.raises(UserError, match="unfinished map with other settings"):
        run_map(run, MapRequest(spec, tmp_path / "map.tif", ["100"], True, tile=8))
    res = run_map(run, req)
    assert res.complete and res.tiles == 6 and res.tiles_computed == 4
    np.testing.assert_array_equal(read_map(res.path)[0], read_map(small_tiles_map)[0])


def test_shards_then_merge(landscape, landscape_run, small_tiles_map, tmp_path, cli):
    spec = map_spec(tmp_path, landscape / "spec.yaml")
    common = [landscape_run, spec, "--out", tmp_path / "map.tif", "--species", "114,135", "--contributions", "--tile", "8"]
    for i in range(2):
        code, _, err = cli("map", *common, "--shard", f"{i}/2")
        assert code == 0 and "--merge" in err, err
        assert not (tmp_path / "map.tif").exists()
    (tmp_path / "map.tif.parts" / "tile-000005.npz").rename(tmp_path / "tile-000005.npz")
    code, _, err = cli("map", *common, "--merge")
    assert code == 2 and "1 of 6 tile(s) not computed yet (first: 5)" in " ".join(err.split())
    (tmp_path / "tile-000005.npz").rename(tmp_path / "map.tif.parts" / "tile-000005.npz")
    code, out, err = cli("map", *common, "--merge")
    assert code == 0, err
    np.testing.assert_array_equal(read_map(tmp_path / "map.tif")[0], read_map(small_tiles_map)[0])
    code, _, err = cli("map", *common)
    assert code == 2 and "exists" in err and "--overwrite" in err


def test_map_from_a_template_raster_with_the_spec_of_the_runs_store(landscape, landscape_run, tmp_path, cli):
    spec = tmp_path / "map.yaml"
    spec.write_text(yaml.safe_dump({"grid": {"template": str(landscape / "bio1.tif")},  # modalities: the store's own spec
                                    "allow_outside_root": True}))
    code, out, err = cli("map", landscape_run, spec, "--out", tmp_path / "m.tif", "--json")
    assert code == 0, err
    doc = json.loads(out)
    with rasterio.open(landscape / "bio1.tif") as t, rasterio.open(tmp_path / "m.tif") as m:
        assert (m.width, m.height, m.transform) == (t.width, t.height, t.transform)
        assert m.count == 8 + 2 and doc["bands"][-2:] == ["richness", "coverage"]
        richness = m.read(9)
        probs = m.read(list(range(1, 9)))
    np.testing.assert_allclose(richness, probs.sum(axis=0), atol=1e-5)
    assert doc["valid_pixels"] == int(np.isfinite(richness).sum()) == 100 * 100


@pytest.mark.parametrize("grid, extra, expected", [
    ({"bbox": [100.0, 10.0, 101.0, 11.0], "resolution": 0.1}, [], "has no pixel where a modality"),
    ({"bbox": [3.0, 43.0, 3.5, 43.5]}, [], "grid: a bbox needs a resolution"),
    ({"bbox": [300000.0, 4800000.0, 310000.0, 4810000.0], "resolution": 100}, [], "lies outside lon -180..180"),
    ({"bbox": [3.0, 43.0, 3.5, 43.5], "resolution": 0.1}, ["--species", "nope"], "--species 'nope'"),
])
def test_bad_map_input_is_refused(landscape, landscape_run, tmp_path, cli, grid, extra, expected):
    spec = tmp_path / "map.yaml"
    spec.write_text(yaml.safe_dump({"dataset": str(landscape / "spec.yaml"), "grid": grid, "allow_outside_root": True}))
    code, _, err = cli("map", landscape_run, spec, "--out", tmp_path / "m.tif", *extra)
    assert code == 2 and expected in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "m.tif").exists()


def test_a_spec_that_does_not_reproduce_the_run_is_refused(landscape, landscape_run, tmp_path, cli):
    dataset = yaml.safe_load((landscape / "spec.yaml").read_text())
    dataset.update(root=str(landscape), allow_outside_root=True)  # a dataset spec read by a map confines its own files
    dataset["modalities"]["sentinel2"]["size"] = 16
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(dataset))
    spec = map_spec(tmp_path, tmp_path / "other.yaml")
    code, _, err = cli("map", landscape_run, spec, "--out", tmp_path / "m.tif")
    assert code == 2 and "modality sentinel2: 64 features per token" in " ".join(err.split())


def _inline_outside(landscape, folder):
    """Inline modalities whose raster lies outside the map spec's folder (an absolute path)."""
    dataset = yaml.safe_load((landscape / "spec.yaml").read_text())
    env = dataset["modalities"]["env"]
    env["files"] = {k: str(landscape / v) for k, v in env["files"].items()}
    return {"modalities": {"env": env}}


def _symlinked_template(landscape, folder):
    (folder / "bio1.tif").symlink_to(landscape / "bio1.tif")
    return {"grid": {"template": "bio1.tif"}}


@pytest.mark.parametrize("make, key", [
    (lambda landscape, folder: {"dataset": str(landscape / "spec.yaml")}, "dataset"),
    (lambda landscape, folder: {"grid": {"template": str(landscape / "bio1.tif")}}, "grid.template"),
    (_symlinked_template, "grid.template"),
    (lambda landscape, folder: {"modalities": {}, "root": str(landscape)}, "root"),
    (_inline_outside, "modalities.env"),
])
def test_map_spec_reads_are_confined_to_its_folder(landscape, landscape_run, tmp_path, cli, make, key):
    """A map spec reads only inside its own folder, as a dataset spec does, unless `allow_outside_root: true`."""
    spec = {"grid": {"bbox": [3.0, 43.0, 3.5, 43.5], "resolution": 0.1}, **make(landscape, tmp_path)}
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(spec))
    code, _, err = cli("map", landscape_run, tmp_path / "map.yaml", "--out", tmp_path / "m.tif")
    err = " ".join(err.split())
    assert code == 2 and key in err and "outside" in err and "allow_outside_root" in err and "Traceback" not in err, err
    assert not (tmp_path / "m.tif").exists()
    if key == "root":
        return  # an empty inline modality set is refused for itself once allowed
    (tmp_path / "map.yaml").write_text(yaml.safe_dump({**spec, "allow_outside_root": True}))
    code, _, err = cli("map", landscape_run, tmp_path / "map.yaml", "--out", tmp_path / "m.tif")
    assert code == 0 and (tmp_path / "m.tif").exists(), err


# ================================================================ a real raster: GLC23's human footprint
@pytest.fixture(scope="module")
def footprint(tmp_path_factory, tiny_trainer):
    """Points around Montpellier labelled from the real Built/Lights 2009 rasters; a run on raster values + location."""
    if not GLC23.is_dir():
        pytest.skip(f"real GLC23 sample files not present at {GLC23}")
    folder = tmp_path_factory.mktemp("footprint")
    hf = GLC23 / "EnvironmentalRasters/HumanFootprint/detailed"
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(3.4, 4.4, 400), rng.uniform(43.3, 43.9, 400)
    from miam_cli.data.readers import raster_points

    built, ok_b = raster_points(hf / "Built2009_WGS84.tif", lon, lat)
    lights, ok_l = raster_points(hf / "Lights2009_WGS84.tif", lon, lat)
    urban = ok_b[:, 0] & (built[:, 0] > np.median(built[ok_b[:, 0], 0]))
    lit = ok_l[:, 0] & (lights[:, 0] > np.median(lights[ok_l[:, 0], 0]))
    species = [" ".join(name for name, on in (("urban", u), ("lit", li), ("north", y > 43.6)) if on) or "[]"
               for u, li, y in zip(urban, lit, lat)]
    pd.DataFrame({"id": range(400), "lon": lon, "lat": lat, "species": species}).to_csv(folder / "points.csv", index=False)
    # a monthly climate cube on a 0.1 deg grid that stops at 4.0 E (NaN over its south-west cell: no data there)
    import xarray as xr

    grid_lon, grid_lat = np.arange(3.35, 4.0, 0.1), np.arange(43.25, 43.95, 0.1)
    tas = np.random.default_rng(1).normal(15, 3, size=(24, len(grid_lat), len(grid_lon))).astype(np.float32)
    tas[:, 0, 0] = np.nan
    xr.Dataset({"tas": (("time", "lat", "lon"), tas)}, coords={"time": pd.date_range("2001-01-01", periods=24, freq="MS"),
                                                             "lat": grid_lat, "lon": grid_lon}).to_netcdf(folder / "cube.nc")
    modalities = {"footprint": {"kind": "raster_values", "files": {"built": str(hf / "Built2009_WGS84.tif"),
                                                                    "lights": str(hf / "Lights2009_WGS84.tif")}},
                  "clim": {"kind": "cube", "path": "cube.nc"},
                  "where": {"kind": "location", "scales": 4}}
    dataset = {"name": "footprint", "allow_outside_root": True,  # the rasters are read where the shared fixtures are
               "points": {"path": "points.csv", "labels": {"species": "species"}, "split": {"block_size": 0.1}},
               "modalities": modalities}
    (folder / "spec.yaml").write_text(yaml.safe_dump(dataset))
    plan, decoder = plan_custom(load_spec(folder / "spec.yaml"), folder / "spec.yaml")
    run_prepare(plan, decoder, folder / "store")
    return folder, tiny_trainer(folder / "store", folder / "run")


def test_real_footprint_raster_map_equals_predict(footprint, tmp_path):
    folder, run = footprint
    spec = map_spec(tmp_path, folder / "spec.yaml", bbox=[3.5, 43.35, 4.3, 43.85], resolution=0.025, crs="EPSG:4326")
    res = api.predict_map(run, spec, out=tmp_path / "m.tif", contributions=True)
    bands, names, _, transform = read_map(res.path)
    # every class by default, in class index order (custom class names sort alphabetically)
    assert names[:3] == ["p(lit)", "p(north)", "p(urban)"] and names[-3:] == ["shapley(clim)", "shapley(footprint)", "shapley(where)"]
    store = centre_store(folder / "spec.yaml", folder / "store", transform, bands.shape[1:], tmp_path)
    table = predicted(run, store, tmp_path, ["urban", "lit", "north"])
    h, w = bands.shape[1:]
    ids = [f"r{r}c{c}" for r in range(h) for c in range(w)]
    for b, s in enumerate(("lit", "north", "urban")):
        np.testing.assert_allclose(bands[b].ravel(), table[s].reindex(ids).to_numpy(), atol=1e-5, rtol=0)
    # modalities in the store's order (the spec's keys, sorted by yaml): clim = bit 1, footprint = 2, where = 4.
    # The sea off Montpellier has no footprint data, the cube stops at 4.0 E, the location is always there
    coverage = bands[names.index("coverage")].astype(int)
    assert {4, 5, 6, 7} <= set(np.unique(coverage))
    assert (bands[names.index("shapley(footprint)")][coverage & 2 == 0] == 0).all()
    assert (bands[names.index("shapley(clim)")][coverage & 1 == 0] == 0).all()
    lon = transform.c + (np.arange(w) + 0.5) * transform.a
    assert (coverage[:, lon > 4.05] & 1 == 0).all() and (coverage[:, lon < 3.9] & 1 == 1).sum() > 0
    assert res.efficiency_gap < 1e-9
