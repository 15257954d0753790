"""Synthetic presence/background data in a projected CRS, with planted truth: a user's own SDM data.

``miam synth points RAW_DIR [--points N] [--seed S]`` calls ``synth_points(raw_dir, points=N, seed=S)``
(defaults 3000, 0) and writes::

    rasters/temperature.tif     covariate rasters, float32, 240 x 240 px of 1 km in WGS 84 / UTM 31N
    rasters/precipitation.tif   (EPSG:32631, south-west France), nodata -9999
    rasters/elevation.tif
    rasters/soil_ph.tif         the weak but informative one (with a lake of nodata)
    points.csv                  id, x, y (metres, EPSG:32631), presence (1 = presence, 0 = background)
    spec.yaml                   a ready dataset spec: `miam prepare custom RAW_DIR/spec.yaml`
    recipe.yaml                 a ready recipe for that store (stores/points): `miam train RAW_DIR/recipe.yaml`
    map.yaml                    a map spec over the rasters' extent at 2 km: `miam map RUN RAW_DIR/map.yaml`
    truth.json                  the planted truth (written last: marks a complete dataset)

Planted truth: one species whose suitability is logistic in the covariates at its location,
eta = 1.6 t - 0.8 p^2 + 1.3 e + 0.7 s - 1.5 (t, p, e, s: temperature, precipitation, elevation and
soil pH, z-scored and made uncorrelated over the grid, so that no covariate stands in for another
by chance). Presences are drawn with probability proportional to sigmoid(eta),
background points uniformly over the grid, `presence_fraction` (30%) of the points are presences.
The spec's modalities: **climate** (temperature and precipitation at the point) is strong,
**terrain** (an 8 x 8 km elevation window, 2 x 2 sub-patches) is moderate, **soil** (pH at the
point) is weak but informative: its field varies on a 6 km scale. The AUC of each planted term
alone on 20,000 points (seeds 0-5): climate 0.70-0.76, terrain 0.63-0.72, soil 0.56-0.60, all 0.78-0.83.
Presences cluster where the climate suits the species, so spatial blocks handed out at random give
splits with very different presence rates; the spec's split is label-aware (the default).
Same arguments, same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from miam_cli.errors import UserError
from miam_cli.synth.output import claim_output_dir, finish_output_dir

GENERATOR_NAME = "miam synth points"
DEFAULT_POINTS = 3000
CRS = "EPSG:32631"
ORIGIN = (400_000.0, 4_950_000.0)  # x of the west edge, y of the north edge (metres)
PIXEL = 1000.0
SHAPE = (240, 240)
NODATA = -9999.0
MARGIN = 5  # pixels kept free at the edges, so that every 8 x 8 window lies inside the rasters
PRESENCE_FRACTION = 0.3
# covariate: (mean, sd in real units, correlation length in pixels, unit)
COVARIATES = {
    "temperature": (12.0, 3.0, 40, "degC"),
    "precipitation": (800.0, 150.0, 30, "mm/year"),
    "elevation": (450.0, 250.0, 15, "m"),
    "soil_ph": (6.5, 0.7, 6, "pH"),
}
# the planted linear predictor, in z-scores of the covariates
COEFFICIENTS = {"temperature": 1.6, "precipitation^2": -0.8, "elevation": 1.3, "soil_ph": 0.7, "intercept": -1.5}
MODALITIES = {"climate": ["temperature", "precipitation"], "terrain": ["elevation"], "soil": ["soil_ph"]}
LAKE = (slice(150, 166), slice(60, 80))  # soil_ph has no data over a lake
OUTPUTS = ("rasters", "points.csv", "spec.yaml", "recipe.yaml", "map.yaml", "truth.json")
MAP_PIXEL = 2000.0  # the map is coarser than the rasters: a laptop maps it in seconds


def synth_points(raw_dir: Path | str, points: int = DEFAULT_POINTS, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the dataset into `raw_dir` and return the truth (also written to truth.json, last)."""
    if points < 50:
        raise UserError(f"--points {points}: need at least 50 points")
    raw = Path(raw_dir)
    claim_output_dir(raw, GENERATOR_NAME, OUTPUTS)
    (raw / "rasters").mkdir()
    rng = np.random.default_rng(seed)
    z = uncorrelated({name: smooth_field(rng, SHAPE, length) for name, (_, _, length, _) in COVARIATES.items()})
    for k, (name, (mean, sd, _, unit)) in enumerate(COVARIATES.items()):
        _write_raster(raw / "rasters" / f"{name}.tif", mean + sd * z[name], name, unit, lake=name == "soil_ph")
        if progress:
            progress(k + 1, len(COVARIATES) + 1)
    eta = suitability(z)
    table = draw_points(rng, eta, points)
    table_path = raw / "points.csv"
    table_path.write_text("id,x,y,presence\n" + "".join(f"{i},{x:.1f},{y:.1f},{p}\n" for i, x, y, p in table))
    (raw / "spec.yaml").write_text(yaml.safe_dump(dataset_spec(), sort_keys=False))
    (raw / "recipe.yaml").write_text(yaml.safe_dump(recipe(), sort_keys=False))
    (raw / "map.yaml").write_text(yaml.safe_dump(map_spec(), sort_keys=False))
    truth = _truth(seed, table, eta)
    (raw / "truth.json").write_text(json.dumps(truth, indent=2))
    finish_output_dir(raw)
    if progress:
        progress(len(COVARIATES) + 1, len(COVARIATES) + 1)
    return truth


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], length: float) -> np.ndarray:
    """White noise low-passed with a Gaussian of `length` pixels (in Fourier space), z-scored."""
    noise = rng.normal(size=shape)
    fy, fx = np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * length) ** 2 * (fx**2 + fy**2))
    field = np.fft.ifft2(np.fft.fft2(noise) * kernel).real
    return (field - field.mean()) / field.std()


def uncorrelated(fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each field minus its projection on the ones before it (Gram-Schmidt over the grid), z-scored:
    smooth fields have few independent cells, and chance correlations between them would let one
    covariate carry another's signal."""
    basis, out = [], {}
    for name, field in fields.items():
        v = field.reshape(-1).astype(np.float64)
        for b in basis:
            v = v - (v @ b) / (b @ b) * b
        v = (v - v.mean()) / v.std()
        basis.append(v)
        out[name] = v.reshape(field.shape)
    return out


def suitability(z: dict[str, np.ndarray]) -> np.ndarray:
    """The planted linear predictor eta on the grid."""
    c = COEFFICIENTS
    return (c["temperature"] * z["temperature"] + c["precipitation^2"] * z["precipitation"] ** 2
            + c["elevation"] * z["elevation"] + c["soil_ph"] * z["soil_ph"] + c["intercept"])


def draw_points(rng: np.random.Generator, eta: np.ndarray, n: int) -> list[tuple[str, float, float, int]]:
    """Presences drawn with weight sigmoid(eta), background uniformly, both inside the margin (points
    on the lake have no soil value: a missing modality); (id, x, y, presence) in a shuffled order."""
    allowed = np.zeros(SHAPE, bool)
    allowed[MARGIN:-MARGIN, MARGIN:-MARGIN] = True
    cells = np.flatnonzero(allowed)
    n_pres = int(round(PRESENCE_FRACTION * n))
    weight = 1 / (1 + np.exp(-eta.reshape(-1)[cells]))
    pres = rng.choice(cells, n_pres, replace=True, p=weight / weight.sum())
    back = rng.choice(cells, n - n_pres, replace=True)
    cell = np.concatenate([pres, back])
    label = np.r_[np.ones(n_pres, int), np.zeros(n - n_pres, int)]
    order = rng.permutation(n)
    row, col = np.divmod(cell[order], SHAPE[1])
    x = ORIGIN[0] + (col + rng.uniform(0.05, 0.95, n)) * PIXEL
    y = ORIGIN[1] - (row + rng.uniform(0.05, 0.95, n)) * PIXEL
    return [(f"p{i:05d}", float(x[i]), float(y[i]), int(label[order][i])) for i in range(n)]


def _write_raster(path: Path, values: np.ndarray, name: str, unit: str, lake: bool) -> None:
    import rasterio
    from rasterio.transform import from_origin

    data = values.astype(np.float32)
    if lake:
        data[LAKE] = NODATA
    profile = {"driver": "GTiff", "height": SHAPE[0], "width": SHAPE[1], "count": 1, "dtype": "float32", "crs": CRS,
               "transform": from_origin(*ORIGIN, PIXEL, PIXEL), "nodata": NODATA}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.set_band_description(1, name)
        dst.update_tags(1, unit=unit)


def dataset_spec() -> dict:
    return {
        "name": "points",
        "points": {"path": "points.csv", "id": "id", "crs": int(CRS.split(":")[1]), "x": "x", "y": "y",
                   "labels": {"binary": "presence"},
                   "split": {"block_size": "20km", "seed": 0}},
        "modalities": {
            "climate": {"kind": "raster_values", "files": {v: f"rasters/{v}.tif" for v in MODALITIES["climate"]}},
            "terrain": {"kind": "raster_patches", "file": "rasters/elevation.tif", "size": 8, "grid": 2, "bands": ["elevation"]},
            "soil": {"kind": "raster_values", "files": {"soil_ph": "rasters/soil_ph.tif"}},
        },
    }


def map_spec() -> dict:
    """The rasters' whole extent, in their CRS, with the dataset spec's modalities at every pixel."""
    west, north = ORIGIN
    east, south = west + SHAPE[1] * PIXEL, north - SHAPE[0] * PIXEL
    return {"dataset": "spec.yaml", "grid": {"bbox": [west, south, east, north], "resolution": MAP_PIXEL, "crs": CRS}}


def recipe() -> dict:
    """Small enough to train in seconds on a laptop CPU."""
    return {"store": "stores/points", "model": {"d_model": 32, "depth": 2, "heads": 4},
            "masking": {"strategy": "miam"}, "train": {"epochs": 10, "batch_size": 128, "lr": 0.003}}


def _truth(seed: int, table: list, eta: np.ndarray) -> dict:
    presence = np.array([p for *_, p in table])
    return {
        "generator": GENERATOR_NAME, "seed": int(seed), "points": len(table), "presences": int(presence.sum()),
        "crs": CRS, "pixel_size_m": PIXEL, "shape": list(SHAPE), "origin": list(ORIGIN),
        "covariates": {k: {"mean": m, "sd": s, "correlation_length_px": length, "unit": u} for k, (m, s, length, u) in COVARIATES.items()},
        "coefficients": COEFFICIENTS,
        "linear_predictor": "eta = sum of coefficients x z-scored, uncorrelated covariates (precipitation squared) + intercept",
        "sampling": f"presences with weight sigmoid(eta) ({PRESENCE_FRACTION:.0%} of the points), background uniform; "
                    f"{MARGIN} px margins excluded; points on the lake have no soil value",
        "modalities": MODALITIES,
        "strength_order": ["climate", "terrain", "soil"],
        "weak_modality": "soil",
        "lake_rows_cols": [[LAKE[0].start, LAKE[0].stop], [LAKE[1].start, LAKE[1].stop]],
        "eta_range": [float(eta.min()), float(eta.max())],
    }
