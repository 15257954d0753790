"""A small synthetic landscape for maps: wall-to-wall rasters, survey points and ready specs.

Written into one folder (the demo's `data/landscape`, the map tests' fixtures):

    bio1.tif, bio12.tif, elevation.tif   climate and terrain, EPSG:4326, 0.02 deg; nodata over a "sea" corner
    sentinel2.tif                        4 bands (red, green, blue, nir), UTM 31N, 500 m, uint16; it covers
                                         the western 70% of the region only (a swath edge)
    points.csv                           id, lon, lat, species (space-separated ids; `[]` for a survey where
                                         none was found; empty for the unlabelled points kept for prediction)
    spec.yaml                            the dataset spec (`miam prepare custom`): env (raster values) +
                                         sentinel2 (8 x 8 px windows, 2 x 2 sub-patches per band)
    map.yaml                             the map spec (`miam map`): the region at 0.02 deg
    truth.json                           the planted truth

Planted truth: two climate fields and elevation drive most species (an easy tabular signal); a
vegetation field, independent of them, is visible only through Sentinel-2's NDVI (red and NIR; green
and blue are noise) and drives the `ndvi_species`. So a map of Sentinel-2's contribution for those
species is high where Sentinel-2 exists and the vegetation field is far from its mean, and zero
beyond the swath edge.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import yaml

REGION = (3.0, 43.0, 5.0, 45.0)  # lon min, lat min, lon max, lat max
ENV_RES = 0.02
S2_CRS, S2_RES = "EPSG:32631", 500.0
S2_WEST_FRACTION = 0.7
NODATA = -9999.0


class _Field:
    """A smooth random field over lon/lat (random Fourier features, unit variance over the region)."""

    def __init__(self, rng: np.random.Generator, lengthscale: float, features: int = 32):
        self.w = rng.normal(0.0, 1.0 / lengthscale, size=(features, 2))
        self.phi = rng.uniform(0.0, 2 * math.pi, size=features)
        self.scale = math.sqrt(2.0 / features)

    def __call__(self, lon, lat) -> np.ndarray:
        x = np.stack([np.asarray(lon, float), np.asarray(lat, float)], axis=-1)
        return self.scale * np.cos(x @ self.w.T + self.phi).sum(axis=-1)


class _World:
    def __init__(self, seed: int, species: int):
        rng = np.random.default_rng([seed, 7])
        self.temp, self.rain, self.relief, self.veg = (_Field(rng, ls) for ls in (0.8, 0.6, 0.4, 0.25))
        self.ids = [str(100 + 7 * k) for k in range(species)]
        self.env_coef = rng.normal(0.0, 1.5, size=(species, 3))
        self.ndvi_species = sorted(rng.choice(species, size=max(1, species // 3), replace=False).tolist())
        self.veg_coef = np.zeros(species)
        self.veg_coef[self.ndvi_species] = rng.choice([-1, 1], size=len(self.ndvi_species)) * 2.5
        self.env_coef[self.ndvi_species] *= 0.3  # these species follow the vegetation more than the climate
        self.bias = rng.normal(-1.0, 0.5, size=species)

    def env(self, lon, lat) -> np.ndarray:
        """[n, 3]: bio1 (deg C), bio12 (mm), elevation (m), from the latent fields."""
        t, r, z = self.temp(lon, lat), self.rain(lon, lat), self.relief(lon, lat)
        return np.stack([12 + 3 * t - 2 * z, 800 + 150 * r, 600 + 400 * z], axis=-1)

    def logits(self, lon, lat) -> np.ndarray:
        latent = np.stack([self.temp(lon, lat), self.rain(lon, lat), self.relief(lon, lat)], axis=-1)
        return latent @ self.env_coef.T + self.veg(lon, lat)[:, None] * self.veg_coef + self.bias


def _sea(lon, lat) -> np.ndarray:
    """The south-west corner is sea: no climate or terrain data there."""
    return (np.asarray(lat) - REGION[1]) + 0.6 * (np.asarray(lon) - REGION[0]) < 0.35


def synth_landscape(out: Path | str, points: int = 1500, species: int = 8, seed: int = 0, unlabelled: float = 0.05) -> dict:
    """Write the landscape into `out`; returns a summary (paths, counts, the NDVI species)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    world = _World(seed, species)
    _write_env(out, world)
    _write_sentinel2(out, world, np.random.default_rng([seed, 11]))
    labelled = _write_points(out, world, points, unlabelled, np.random.default_rng([seed, 13]))
    _write_specs(out, world)
    truth = {"generator": "miam synth landscape", "seed": seed, "points": points, "labelled": labelled, "species": world.ids,
             "ndvi_species": [world.ids[k] for k in world.ndvi_species], "region": list(REGION),
             "sentinel2_east_edge_lon": REGION[0] + S2_WEST_FRACTION * (REGION[2] - REGION[0]),
             "description": "species logits = climate/terrain fields @ coefficients + vegetation field (seen only as "
                            "Sentinel-2 NDVI) x coefficient, nonzero for ndvi_species; the south-west corner is sea "
                            "(no climate data); Sentinel-2 covers the west of the region only"}
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return {"dir": str(out), "spec": str(out / "spec.yaml"), "map": str(out / "map.yaml"), **truth}


def _write_env(out: Path, world: _World) -> None:
    import rasterio
    from rasterio.transform import from_origin

    width, height = round((REGION[2] - REGION[0]) / ENV_RES), round((REGION[3] - REGION[1]) / ENV_RES)
    transform = from_origin(REGION[0], REGION[3], ENV_RES, ENV_RES)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    lon, lat = REGION[0] + cols * ENV_RES, REGION[3] - rows * ENV_RES
    env = world.env(lon.ravel(), lat.ravel()).reshape(height, width, 3)
    env[_sea(lon, lat)] = NODATA
    for b, name in enumerate(("bio1", "bio12", "elevation")):
        with rasterio.open(out / f"{name}.tif", "w", driver="GTiff", width=width, height=height, count=1, dtype="float32",
                           crs="EPSG:4326", transform=transform, nodata=NODATA) as dst:
            dst.write(env[..., b].astype(np.float32), 1)


def _write_sentinel2(out: Path, world: _World, rng: np.random.Generator) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.warp import transform, transform_bounds

    east = REGION[0] + S2_WEST_FRACTION * (REGION[2] - REGION[0])
    left, bottom, right, top = transform_bounds("EPSG:4326", S2_CRS, REGION[0], REGION[1], east, REGION[3])
    width, height = int((right - left) // S2_RES), int((top - bottom) // S2_RES)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    lon, lat = transform(S2_CRS, "EPSG:4326", (left + cols * S2_RES).ravel().tolist(), (top - rows * S2_RES).ravel().tolist())
    ndvi = 0.45 + 0.25 * np.tanh(world.veg(lon, lat)).reshape(height, width)
    bright = 1500 + 300 * rng.standard_normal((height, width))
    red, nir = bright * (1 - ndvi), bright * (1 + ndvi)
    green, blue = (1200 + 400 * rng.standard_normal((height, width)) for _ in range(2))
    bands = np.clip(np.stack([red, green, blue, nir]), 0, 65535).astype(np.uint16)
    with rasterio.open(out / "sentinel2.tif", "w", driver="GTiff", width=width, height=height, count=4, dtype="uint16",
                       crs=S2_CRS, transform=from_origin(left, top, S2_RES, S2_RES), nodata=0) as dst:
        dst.write(bands)
        for b, name in enumerate(("red", "green", "blue", "nir"), start=1):
            dst.set_band_description(b, name)


def _write_points(out: Path, world: _World, n: int, unlabelled: float, rng: np.random.Generator) -> int:
    import pandas as pd

    lon = np.round(rng.uniform(REGION[0], REGION[2], size=n), 5)
    lat = np.round(rng.uniform(REGION[1], REGION[3], size=n), 5)
    present = rng.random((n, len(world.ids))) < 1 / (1 + np.exp(-world.logits(lon, lat)))
    cells = [" ".join(world.ids[k] for k in np.flatnonzero(row)) or "[]" for row in present]
    hidden = rng.random(n) < unlabelled
    cells = ["" if h else c for c, h in zip(cells, hidden)]
    pd.DataFrame({"id": [f"s{i:05d}" for i in range(n)], "lon": lon, "lat": lat, "species": cells}).to_csv(out / "points.csv", index=False)
    return int((~hidden).sum())


def _write_specs(out: Path, world: _World) -> None:
    spec = {
        "name": "landscape",
        "points": {"path": "points.csv", "labels": {"species": "species", "separator": " "}, "split": {"block_size": 0.25}},
        "modalities": {
            "env": {"kind": "raster_values", "files": {"bio1": "bio1.tif", "bio12": "bio12.tif", "elevation": "elevation.tif"},
                    "description": "climate and terrain at the point"},
            "sentinel2": {"kind": "raster_patches", "file": "sentinel2.tif", "size": 8, "grid": 2,
                          "description": "4 x 4 km Sentinel-2 window, 2 x 2 sub-patches per band"},
        },
    }
    (out / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    map_spec = {"dataset": "spec.yaml", "grid": {"bbox": list(REGION), "resolution": ENV_RES, "crs": "EPSG:4326"},
                "species": [world.ids[k] for k in world.ndvi_species]}
    (out / "map.yaml").write_text(yaml.safe_dump(map_spec, sort_keys=False))
