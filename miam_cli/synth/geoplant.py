"""Synthetic GeoPlant data in the real GLC24 Kaggle file layout, with planted, documented truth.

``miam synth geoplant RAW_DIR [--surveys N] [--species K] [--seed S]`` calls
``synth_geoplant(raw_dir, surveys=N, species=K, seed=S)`` (defaults: 2000 surveys, 24 species,
seed 0, 15 % of the surveys in the test files, 2003 as the extreme-event year).

What is written (paths relative to RAW_DIR; ``CD`` = last two digits of the surveyId, ``AB`` = the
two before, computed as the real GLC code does, ``str(id)[-2:]`` and ``str(id)[-4:-2]``, so a 3-digit
id gets a one-character ``AB`` folder)::

    GLC24_PA_metadata_train.csv / GLC24_PA_metadata_test.csv
        lon,lat,year,geoUncertaintyInM,areaInM2,region,country,speciesId,surveyId
        long format, one row per (survey, species present); speciesId written as a float ("6310.0");
        a survey with no species present has one row with an empty speciesId. Test surveys carry
        labels too so that they can be evaluated.
    PA_{Train,Test}_SatellitePatches_RGB/pa_{train,test}_patches_rgb/CD/AB/<id>.jpeg   RGB 128x128
    PA_{Train,Test}_SatellitePatches_NIR/pa_{train,test}_patches_nir/CD/AB/<id>.jpeg   L   128x128
    TimeSeries-Cubes/TimeSeries-Cubes/GLC24-PA-train-landsat_time_series/
        GLC24-PA-train-landsat-time-series_<id>_cube.pt     (folder "_" / file "-", as the real one)
    TimeSeries-Cubes/TimeSeries-Cubes/GLC24-PA-test-landsat_time_series/
        GLC24-PA-test-landsat_time_series_<id>_cube.pt
        float32 [6 bands (red, green, blue, nir, swir1, swir2), 4 quarters, 21 years 2000..2020],
        stored like the real file as a permuted view of a [6, 21, 4] storage, stride (84, 1, 4)
    TimeSeries-Cubes/TimeSeries-Cubes/GLC24-PA-{train,test}-bioclimatic_monthly/
        GLC24-PA-{train,test}-bioclimatic_monthly_<id>_cube.pt
        float32 [4 variables (pr, tas, tasmin, tasmax), 19 years 2000..2018, 12 months],
        a permuted view of a [19, 12, 4] storage, stride (1, 48, 4), as the real file
    EnvironmentalData/Climate/Average 1981-2010/GLC24-PA-{train,test}-bioclimatic.csv  surveyId,Bio1..Bio19
    EnvironmentalData/SoilGrids/GLC24-PA-{train,test}-soilgrids.csv                   surveyId,Soilgrid-*
    EnvironmentalData/Elevation/GLC24-PA-{train,test}-elevation.csv                   surveyId,Elevation
    EnvironmentalData/LandCover/GLC24-PA-{train,test}-landcover.csv   surveyId,LandCover-1..LandCover-13
    EnvironmentalData/HumanFootprint/GLC24-PA-{train,test}-human_footprint.csv  surveyId,HumanFootprint-*
    truth.json          the planted truth (written last: its presence marks a complete dataset)
    truth_latents.csv   per-survey latent values (surveyId, split, env latents, ndvi, event, ...)

Planted truth (see ``truth.json`` ``description``): species k is present in a survey with
probability sigmoid(a_k*T_k + b_k*v + c_k*e + eps - t_k), where T_k is a linear niche over four
smooth environmental latents written near-linearly into Bio1, Bio12, Soilgrid-phh2o and Elevation
(tabular dominates), v is a vegetation latent visible only through NDVI = (nir-red)/(nir+red) of the
Sentinel-2 patch, strongest at the patch centre (v = 0.8*productivity + 0.6*unique, productivity
being written into Soilgrid-soc, so that v is largely redundant with the tabular data), and e is the local intensity of an extreme-event (heatwave) year
visible in the Landsat and bioclimatic cubes of that year only, to which a subset of species responds.
Green and blue are pure noise.

Everything is drawn from numpy Generators seeded from ``seed`` (per-survey streams keyed by the
surveyId), CSV numbers use fixed formats and torch.save is deterministic, so the same arguments give
byte-identical files.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from miam_cli.errors import UserError
from miam_cli.synth.output import claim_output_dir, finish_output_dir

__all__ = [
    "DEFAULT_SURVEYS",
    "DEFAULT_SPECIES",
    "DEFAULT_SEED",
    "DEFAULT_TEST_FRACTION",
    "DEFAULT_EVENT_YEAR",
    "FAULT_KINDS",
    "LANDSAT_BANDS",
    "LANDSAT_YEARS",
    "BIOCLIM_VARIABLES",
    "BIOCLIM_YEARS",
    "ENV_TABLES",
    "METADATA_COLUMNS",
    "synth_geoplant",
    "inject_faults",
    "patch_subdirs",
    "metadata_path",
    "rgb_patch_path",
    "nir_patch_path",
    "landsat_cube_path",
    "bioclim_cube_path",
    "env_table_path",
    "expected_ndvi_weight",
]

# ----------------------------------------------------------------------------------------------
# Defaults and constants
# ----------------------------------------------------------------------------------------------

DEFAULT_SURVEYS = 2000
DEFAULT_SPECIES = 24
DEFAULT_SEED = 0
DEFAULT_TEST_FRACTION = 0.15
DEFAULT_EVENT_YEAR = 2003

GENERATOR_NAME = "miam synth geoplant"
GENERATOR_VERSION = 3  # the default; see GENERATOR_VERSIONS and docs/results.md, "Calibration"

LON_RANGE = (-5.0, 15.0)
LAT_RANGE = (42.0, 56.0)
MAX_SPECIES_ID = 11255  # GLC24 species ids run up to about this value
MIN_SURVEYS = 10

PATCH_SIZE = 128
JPEG_QUALITY = 95  # the real GLC24 patches use quality 90 (4:2:0); 95 keeps NDVI crisp
PATCH_DECAY_SIGMA_PX = 20.0
NDVI_BASE = 0.35
NDVI_AMPLITUDE = 0.18
NDVI_PIXEL_NOISE = 0.03
NDVI_BACKGROUND_SD = 0.08  # v2's; each version sets its own (GeneratorVersion.background_sd)
BRIGHTNESS_LOG_SD = 0.30
RED_NIR_SCALE = 70.0

LANDSAT_BANDS = ("red", "green", "blue", "nir", "swir1", "swir2")
LANDSAT_YEARS = tuple(range(2000, 2021))
LANDSAT_QUARTERS = 4
BIOCLIM_VARIABLES = ("pr", "tas", "tasmin", "tasmax")
BIOCLIM_YEARS = tuple(range(2000, 2019))
BIOCLIM_MONTHS = 12
SUMMER_MONTHS = (5, 6, 7)  # June, July, August (0-based)

# Landsat: typical levels (same scale as the real cubes), seasonal multipliers per quarter,
# and the event effect per unit of event intensity in quarter 3 (half of it in quarter 2).
_LANDSAT_LEVEL = np.array([15.0, 16.0, 8.0, 75.0, 55.0, 27.0])
_LANDSAT_SEASON = np.array(
    [
        [1.10, 0.95, 0.90, 1.05],  # red
        [1.00, 1.05, 1.05, 0.95],  # green
        [1.05, 1.00, 0.95, 1.00],  # blue
        [0.75, 1.05, 1.15, 0.95],  # nir
        [0.90, 1.00, 1.10, 1.00],  # swir1
        [0.90, 1.00, 1.10, 1.00],  # swir2
    ]
)
_LANDSAT_EVENT = np.array([3.0, 0.0, 0.0, -15.0, 10.0, 6.0])
_LANDSAT_NOISE_REL = 0.06

# Bioclim monthly cube (temperatures in K x 10, precipitation on the real cube's scale).
_BIOCLIM_EVENT = {"tas": 18.0, "tasmin": 10.0, "tasmax": 30.0, "pr_log": -0.25}

METADATA_COLUMNS = (
    "lon", "lat", "year", "geoUncertaintyInM", "areaInM2", "region", "country", "speciesId", "surveyId",
)

# Environmental tables: key -> (folder, file stem, columns)
_HF_NAMES = (
    "Built1994", "Built2009", "croplands1992", "croplands2005", "Lights1994", "Lights2009",
    "NavWater1994", "NavWater2009", "Pasture1993", "Pasture2009", "Popdensity1990", "Popdensity2010",
    "Railways", "Roads", "HFP1993", "HFP2009",
)
ENV_TABLES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "bioclimatic": (
        "EnvironmentalData/Climate/Average 1981-2010", "bioclimatic",
        tuple(f"Bio{i}" for i in range(1, 20)),
    ),
    "soilgrids": (
        "EnvironmentalData/SoilGrids", "soilgrids",
        tuple(f"Soilgrid-{n}" for n in ("bdod", "cec", "cfvo", "clay", "nitrogen", "phh2o", "sand", "silt", "soc")),
    ),
    "elevation": ("EnvironmentalData/Elevation", "elevation", ("Elevation",)),
    "landcover": ("EnvironmentalData/LandCover", "landcover", tuple(f"LandCover-{i}" for i in range(1, 14))),
    "human_footprint": (
        "EnvironmentalData/HumanFootprint", "human_footprint",
        tuple(f"HumanFootprint-{n}" for n in _HF_NAMES),
    ),
}

# Latent environmental variables; the first four form the species niches, "productivity" feeds
# the redundant part of the NDVI latent.
ENV_LATENTS = ("temperature", "moisture", "soil_ph", "elevation", "productivity")
NICHE_LATENTS = ENV_LATENTS[:4]
# column -> (latent, offset, slope per unit latent, noise sd as a fraction of the slope)
SIGNAL_COLUMNS: dict[str, tuple[str, float, float, float]] = {
    "Bio1": ("temperature", 2830.0, 25.0, 0.1),
    "Bio12": ("moisture", 8000.0, 1500.0, 0.1),
    "Soilgrid-phh2o": ("soil_ph", 62.0, 8.0, 0.1),
    "Elevation": ("elevation", 450.0, 300.0, 0.1),
    "Soilgrid-soc": ("productivity", 350.0, 90.0, 0.1),
}
# v3: real bioclimatic and soil columns are strongly correlated with each other; each latent is
# written into several columns, so that the tabular view of every latent survives partial masking
# of the tabular tokens (the redundancy that lets the dominant modality crowd the weak one out).
SIGNAL_COLUMNS_V3: dict[str, tuple[str, float, float, float]] = {
    **SIGNAL_COLUMNS,
    "Bio5": ("temperature", 2950.0, 28.0, 0.15),
    "Bio6": ("temperature", 2700.0, 30.0, 0.15),
    "Bio16": ("moisture", 2600.0, 500.0, 0.15),
    "Soilgrid-nitrogen": ("productivity", 300.0, 110.0, 0.15),
    "Soilgrid-cec": ("productivity", 220.0, 55.0, 0.15),
}


@dataclass(frozen=True)
class GeneratorVersion:
    """What differs between generator versions (the file layout never does).

    v2 (issue 8): v = 0.8*productivity + 0.6*unique, species weights a in [1.6, 2.4] on the tabular
    niche and |b| in [0.9, 1.4] on v. Sentinel-2 alone is weak (oracle ~58.5 AUC), uniform's gap to it
    4.3 points: far from the paper's regime, so seed noise decides rankings.
    v3 (issue 13, the paper's regime): v carries more of every species' signal (|b| in [2.2, 3.0],
    a in [1.2, 1.8]), is more redundant with the tabular data (corr 0.9 with productivity, written into
    three columns) and is read from cleaner images (background texture sd 0.04), so Sentinel-2 alone is
    strong (oracle 76.7 validation AUC) but the tabular data can stand in for it (uniform 15 points below). Calibrated on uniform and oracle
    runs only (docs/results.md, "Calibration of generator v3").
    """

    version: int
    a_range: tuple[float, float]
    b_range: tuple[float, float]
    ndvi_env_corr: float
    background_sd: float
    signal_columns: dict[str, tuple[str, float, float, float]]

    @property
    def ndvi_unique(self) -> float:
        return math.sqrt(1.0 - self.ndvi_env_corr**2)


GENERATOR_VERSIONS: dict[int, GeneratorVersion] = {
    2: GeneratorVersion(2, (1.6, 2.4), (0.9, 1.4), 0.8, 0.08, SIGNAL_COLUMNS),
    3: GeneratorVersion(3, (1.2, 1.8), (2.2, 3.0), 0.9, 0.04, SIGNAL_COLUMNS_V3),
}

EVENT_SPECIES_FRACTION = 0.4
LOGIT_NOISE_SD = 0.5
_MISSING_ENV_COLUMN = "Soilgrid-cfvo"  # ~1 % empty cells, a real quirk (noise column only)
_MISSING_ENV_RATE = 0.01

SPLITS = ("train", "test")  # the release's subsets, each with its own files
FAULT_KINDS = ("missing_file", "corrupt_file", "wrong_shape", "nan_values", "empty_species")

# Stream tags for per-purpose generators.
_S_IDS, _S_SPLIT, _S_LOC, _S_FIELDS, _S_SPECIES, _S_LATENT, _S_LABELS, _S_CAL, _S_META, _S_ENV = range(10)
_S_PATCH, _S_LANDSAT, _S_BIOCLIM = 100, 101, 102


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *map(int, keys)])))


# ----------------------------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------------------------


def patch_subdirs(survey_id: int) -> tuple[str, str]:
    """The real GLC rule: ``CD = str(id)[-2:]``, ``AB = str(id)[-4:-2]`` (shorter for short ids)."""
    s = str(int(survey_id))
    return s[-2:], s[-4:-2]


def _split_word(split: str) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    return split


def metadata_path(raw_dir: Path | str, split: str) -> Path:
    return Path(raw_dir) / f"GLC24_PA_metadata_{_split_word(split)}.csv"


def _patch_path(raw_dir: Path | str, split: str, kind: str, survey_id: int) -> Path:
    split = _split_word(split)
    cd, ab = patch_subdirs(survey_id)
    top = f"PA_{split.capitalize()}_SatellitePatches_{kind.upper()}"
    inner = f"pa_{split}_patches_{kind.lower()}"
    return Path(raw_dir) / top / inner / cd / ab / f"{int(survey_id)}.jpeg"


def rgb_patch_path(raw_dir: Path | str, split: str, survey_id: int) -> Path:
    return _patch_path(raw_dir, split, "rgb", survey_id)


def nir_patch_path(raw_dir: Path | str, split: str, survey_id: int) -> Path:
    return _patch_path(raw_dir, split, "nir", survey_id)


_CUBES_ROOT = Path("TimeSeries-Cubes") / "TimeSeries-Cubes"


def landsat_cube_path(raw_dir: Path | str, split: str, survey_id: int) -> Path:
    split = _split_word(split)
    folder = f"GLC24-PA-{split}-landsat_time_series"
    # The real train files use hyphens in the file name (folder uses underscores); test files do not.
    stem = "GLC24-PA-train-landsat-time-series" if split == "train" else "GLC24-PA-test-landsat_time_series"
    return Path(raw_dir) / _CUBES_ROOT / folder / f"{stem}_{int(survey_id)}_cube.pt"


def bioclim_cube_path(raw_dir: Path | str, split: str, survey_id: int) -> Path:
    split = _split_word(split)
    name = f"GLC24-PA-{split}-bioclimatic_monthly"
    return Path(raw_dir) / _CUBES_ROOT / name / f"{name}_{int(survey_id)}_cube.pt"


def env_table_path(raw_dir: Path | str, table: str, split: str) -> Path:
    folder, stem, _ = ENV_TABLES[table]
    return Path(raw_dir) / folder / f"GLC24-PA-{_split_word(split)}-{stem}.csv"


_TOP_LEVEL_OUTPUTS = (
    "GLC24_PA_metadata_train.csv",
    "GLC24_PA_metadata_test.csv",
    "PA_Train_SatellitePatches_RGB",
    "PA_Train_SatellitePatches_NIR",
    "PA_Test_SatellitePatches_RGB",
    "PA_Test_SatellitePatches_NIR",
    "TimeSeries-Cubes",
    "EnvironmentalData",
    "truth.json",
    "truth_latents.csv",
)


# ----------------------------------------------------------------------------------------------
# Smooth spatial fields (random Fourier features), standardised on a fixed grid
# ----------------------------------------------------------------------------------------------


class _Field:
    """f(lon, lat) = sqrt(2/R) * sum cos(w . x + phi), x in degrees (lon scaled by cos 49 deg)."""

    _COS_LAT = math.cos(math.radians(49.0))

    def __init__(self, rng: np.random.Generator, lengthscale: float, features: int = 48):
        self.w = rng.normal(0.0, 1.0 / lengthscale, size=(features, 2))
        self.phi = rng.uniform(0.0, 2.0 * math.pi, size=features)
        self.amp = math.sqrt(2.0 / features)
        gl, ga = np.meshgrid(np.linspace(*LON_RANGE, 48), np.linspace(*LAT_RANGE, 48))
        raw = self._raw(gl.ravel(), ga.ravel())
        self.mean = float(raw.mean())
        self.sd = float(raw.std()) or 1.0

    def _raw(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        x = np.stack([np.asarray(lon) * self._COS_LAT, np.asarray(lat)], axis=-1)
        return self.amp * np.cos(x @ self.w.T + self.phi).sum(axis=-1)

    def __call__(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        return (self._raw(lon, lat) - self.mean) / self.sd


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ----------------------------------------------------------------------------------------------
# The world: fields, species, thresholds (depends on seed and species count only)
# ----------------------------------------------------------------------------------------------


class _World:
    def __init__(self, seed: int, species: int, gen: GeneratorVersion = GENERATOR_VERSIONS[GENERATOR_VERSION]):
        self.seed, self.gen = seed, gen
        frng = _rng(seed, _S_FIELDS)
        self.env_fields = [_Field(frng, lengthscale=2.5) for _ in ENV_LATENTS]
        noise_cols = [c for cols in (t[2] for t in ENV_TABLES.values()) for c in cols if c not in gen.signal_columns]
        self.noise_columns = noise_cols
        self.noise_fields = {c: _Field(frng, lengthscale=float(frng.uniform(1.5, 4.0)), features=24) for c in noise_cols}

        srng = _rng(seed, _S_SPECIES)
        k = species
        self.species_ids = np.sort(srng.choice(np.arange(1, MAX_SPECIES_ID + 1), size=k, replace=False))
        niche = srng.normal(size=(k, len(NICHE_LATENTS)))
        self.niche = niche / np.linalg.norm(niche, axis=1, keepdims=True)
        self.a = srng.uniform(*gen.a_range, size=k)
        self.b = srng.choice([-1.0, 1.0], size=k) * srng.uniform(*gen.b_range, size=k)
        n_event = max(1, int(round(EVENT_SPECIES_FRACTION * k)))
        event_idx = srng.choice(k, size=n_event, replace=False)
        self.c = np.zeros(k)
        self.c[event_idx] = srng.choice([-1.0, 1.0], size=n_event) * srng.uniform(1.2, 1.8, size=n_event)
        self.prevalence = srng.uniform(0.10, 0.30, size=k)

        # Thresholds: a fixed calibration sample (independent of the number of surveys).
        crng = _rng(seed, _S_CAL)
        n_cal = 8192
        lon = crng.uniform(*LON_RANGE, size=n_cal)
        lat = crng.uniform(*LAT_RANGE, size=n_cal)
        z = self.env(lon, lat)
        u = crng.standard_normal(n_cal)
        e = crng.standard_normal(n_cal)
        eps = crng.normal(0.0, LOGIT_NOISE_SD, size=(n_cal, k))
        score = self.score(z, self.ndvi_latent(z, u), e) + eps
        lo = np.full(k, -20.0)
        hi = np.full(k, 20.0)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            too_many = _sigmoid(score - mid).mean(axis=0) > self.prevalence
            lo = np.where(too_many, mid, lo)
            hi = np.where(too_many, hi, mid)
        self.threshold = 0.5 * (lo + hi)

    def env(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        return np.stack([f(lon, lat) for f in self.env_fields], axis=-1)

    def ndvi_latent(self, z: np.ndarray, u: np.ndarray) -> np.ndarray:
        prod = z[..., ENV_LATENTS.index("productivity")]
        return self.gen.ndvi_env_corr * prod + self.gen.ndvi_unique * u

    def tabular_signal(self, z: np.ndarray) -> np.ndarray:
        return z[..., : len(NICHE_LATENTS)] @ self.niche.T

    def score(self, z: np.ndarray, v: np.ndarray, e: np.ndarray) -> np.ndarray:
        return self.a * self.tabular_signal(z) + self.b * v[:, None] + self.c * e[:, None]


# ----------------------------------------------------------------------------------------------
# Per-survey modalities
# ----------------------------------------------------------------------------------------------

_yy, _xx = np.mgrid[0:PATCH_SIZE, 0:PATCH_SIZE].astype(np.float64)
_centre = (PATCH_SIZE - 1) / 2.0
_R2 = (_yy - _centre) ** 2 + (_xx - _centre) ** 2
_DECAY_F64 = np.exp(-_R2 / (2.0 * PATCH_DECAY_SIGMA_PX**2))
_DECAY = _DECAY_F64.astype(np.float32)
_LINE = (np.arange(PATCH_SIZE) - _centre) / PATCH_SIZE  # pixel coordinate in patch widths


def expected_ndvi_weight(grid: int = 4) -> list[list[float]]:
    """Mean of the radial NDVI weight w(r) over each cell of a grid x grid cut of the patch."""
    s = PATCH_SIZE // grid
    return [[float(_DECAY_F64[i * s:(i + 1) * s, j * s:(j + 1) * s].mean()) for j in range(grid)] for i in range(grid)]


def _waves(rng: np.random.Generator, freq_sd: float = 3.0) -> np.ndarray:
    """A smooth zero-mean, unit-variance random field: three plane waves (freq_sd cycles per patch).

    cos(a*x + b*y + c) = cos(a*x) cos(b*y + c) - sin(a*x) sin(b*y + c): two outer products per wave.
    """
    out = np.zeros((PATCH_SIZE, PATCH_SIZE), dtype=np.float32)
    for _ in range(3):
        fx, fy = rng.normal(0.0, freq_sd, size=2)
        ph = rng.uniform(0.0, 2.0 * math.pi)
        ax = (2.0 * math.pi * fx) * _LINE
        by = (2.0 * math.pi * fy) * _LINE + ph
        out += (np.outer(np.cos(by), np.cos(ax)) - np.outer(np.sin(by), np.sin(ax))).astype(np.float32)
    return out * np.float32(1.0 / math.sqrt(1.5))


def _texture(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """A smooth random multiplicative texture around 1."""
    return 1.0 + amplitude * _waves(rng)


def _noise(rng: np.random.Generator, sd: float) -> np.ndarray:
    return sd * rng.standard_normal((PATCH_SIZE, PATCH_SIZE), dtype=np.float32)


def _make_patches(seed: int, survey_id: int, v: float, background_sd: float = NDVI_BACKGROUND_SD) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(seed, _S_PATCH, survey_id)
    # NDVI field: base + amplitude * v * w(r) + pixel noise,
    # plus a smooth background NDVI texture (land-cover heterogeneity) independent of v, so that
    # where w(r) is small (the edges) the patch says little about v.
    ndvi = (
        NDVI_BASE
        + (NDVI_AMPLITUDE * v) * _DECAY
        + background_sd * _waves(rng, 2.0)
        + _noise(rng, NDVI_PIXEL_NOISE)
    )
    np.clip(ndvi, -0.9, 0.9, out=ndvi)
    # Brightness shared by red and NIR (cancels in the ratio), independent of every label.
    bright = (RED_NIR_SCALE * math.exp(rng.normal(0.0, BRIGHTNESS_LOG_SD))) * _texture(rng, 0.08)
    red = bright * (1.0 - ndvi) + _noise(rng, 1.5)
    nir = bright * (1.0 + ndvi) + _noise(rng, 1.5)
    # Green and blue: pure noise, independent of everything else.
    green = (80.0 * math.exp(rng.normal(0.0, 0.25))) * _texture(rng, 0.08) + _noise(rng, 3.0)
    blue = (65.0 * math.exp(rng.normal(0.0, 0.25))) * _texture(rng, 0.08) + _noise(rng, 3.0)
    rgb = np.stack([red, green, blue], axis=-1)
    to8 = lambda a: np.clip(np.rint(a), 0, 255).astype(np.uint8)  # noqa: E731
    return to8(rgb), to8(nir)


def _make_landsat(seed: int, survey_id: int, e: float, event_index: int) -> np.ndarray:
    """Return the [6 bands, 21 years, 4 quarters] storage (permute(0, 2, 1) gives the real axes)."""
    rng = _rng(seed, _S_LANDSAT, survey_id)
    n_years = len(LANDSAT_YEARS)
    level = _LANDSAT_LEVEL * np.exp(rng.normal(0.0, 0.15, size=6))
    slope = rng.normal(0.0, 0.003, size=6)
    years = np.arange(n_years) - (n_years - 1) / 2.0
    mean = level[:, None, None] * (1.0 + slope[:, None, None] * years[None, :, None]) * _LANDSAT_SEASON[:, None, :]
    cube = mean + _LANDSAT_NOISE_REL * level[:, None, None] * rng.standard_normal((6, n_years, LANDSAT_QUARTERS))
    cube[:, event_index, 2] += _LANDSAT_EVENT * e
    cube[:, event_index, 1] += 0.5 * _LANDSAT_EVENT * e
    return np.clip(np.rint(cube), 1.0, None).astype(np.float32)


def _make_bioclim(seed: int, survey_id: int, e: float, event_index: int) -> np.ndarray:
    """Return the [19 years, 12 months, 4 variables] storage (permute(2, 0, 1) gives the real axes)."""
    rng = _rng(seed, _S_BIOCLIM, survey_id)
    n_years = len(BIOCLIM_YEARS)
    months = np.arange(BIOCLIM_MONTHS)
    season = -np.cos(2.0 * math.pi * (months + 0.5) / 12.0)  # coldest in January
    t0 = 2830.0 + rng.normal(0.0, 30.0)
    amp = 80.0 + rng.normal(0.0, 10.0)
    trend = 0.3 * (np.arange(n_years) - (n_years - 1) / 2.0)
    tas = t0 + amp * season[None, :] + trend[:, None] + rng.normal(0.0, 12.0, size=(n_years, BIOCLIM_MONTHS))
    tasmin = tas - 45.0 + rng.normal(0.0, 5.0, size=tas.shape)
    tasmax = tas + 55.0 + rng.normal(0.0, 5.0, size=tas.shape)
    pr_level = 6000.0 * math.exp(rng.normal(0.0, 0.3))
    log_pr = (
        math.log(pr_level)
        + 0.2 * np.sin(2.0 * math.pi * months / 12.0)[None, :]
        + rng.normal(0.0, 0.45, size=tas.shape)
    )
    s = list(SUMMER_MONTHS)
    tas[event_index, s] += _BIOCLIM_EVENT["tas"] * e
    tasmin[event_index, s] += _BIOCLIM_EVENT["tasmin"] * e
    tasmax[event_index, s] += _BIOCLIM_EVENT["tasmax"] * e
    log_pr[event_index, s] += _BIOCLIM_EVENT["pr_log"] * e
    pr = np.exp(log_pr)
    cube = np.stack([pr, tas, tasmin, tasmax], axis=-1)
    return np.rint(cube).astype(np.float32)


def _save_cube(storage: np.ndarray, perm: tuple[int, ...], path: Path) -> None:
    torch.save(torch.from_numpy(np.ascontiguousarray(storage)).permute(*perm), path)


def _write_survey(raw_dir: Path, seed: int, split: str, survey_id: int, v: float, e: float,
                  landsat_event: int, bioclim_event: int, background_sd: float) -> int:
    rgb, nir = _make_patches(seed, survey_id, v, background_sd)
    paths = [rgb_patch_path(raw_dir, split, survey_id), nir_patch_path(raw_dir, split, survey_id)]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(paths[0], format="JPEG", quality=JPEG_QUALITY)
    Image.fromarray(nir).save(paths[1], format="JPEG", quality=JPEG_QUALITY)
    lp = landsat_cube_path(raw_dir, split, survey_id)
    bp = bioclim_cube_path(raw_dir, split, survey_id)
    _save_cube(_make_landsat(seed, survey_id, e, landsat_event), (0, 2, 1), lp)
    _save_cube(_make_bioclim(seed, survey_id, e, bioclim_event), (2, 0, 1), bp)
    return sum(p.stat().st_size for p in (*paths, lp, bp))


# ----------------------------------------------------------------------------------------------
# Metadata helpers
# ----------------------------------------------------------------------------------------------


def _country(lon: float, lat: float) -> str:
    boxes = (
        ("Denmark", 8.0, 13.0, 54.6, 56.0),
        ("United Kingdom", -5.0, 1.8, 50.0, 56.0),
        ("Netherlands", 3.4, 7.2, 51.3, 53.6),
        ("Belgium", 2.5, 6.4, 49.5, 51.3),
        ("Switzerland", 6.0, 10.5, 45.8, 47.5),
        ("Austria", 10.5, 15.0, 46.4, 48.6),
        ("Czech Republic", 12.1, 15.0, 48.6, 51.0),
        ("Italy", 6.6, 15.0, 42.0, 46.4),
        ("Spain", -5.0, 3.2, 42.0, 43.3),
        ("Germany", 6.0, 15.0, 47.3, 54.6),
    )
    for name, lo0, lo1, la0, la1 in boxes:
        if lo0 <= lon <= lo1 and la0 <= lat <= la1:
            return name
    return "France" if lon < 7.5 else "Germany"


def _region(lon: float, lat: float) -> str:
    if lat < 44.0 and lon > 0.0:
        return "MEDITERRANEAN"
    if 45.5 < lat < 47.8 and 6.0 < lon < 14.0:
        return "ALPINE"
    if lon < 4.0 or (lat > 52.0 and lon < 9.0):
        return "ATLANTIC"
    return "CONTINENTAL"


def _fmt(x: float, decimals: int) -> str:
    if x is None or not np.isfinite(x):
        return ""
    s = f"{x:.{decimals}f}"
    return "0." + "0" * decimals if s in ("-0." + "0" * decimals,) else s


# Noise-column scales: name prefix -> (offset, scale, decimals, lower bound)
def _noise_column_spec(col: str) -> tuple[float, float, int, float | None]:
    if col.startswith("Bio"):
        i = int(col[3:])
        if i in (2, 3, 4, 7, 15):
            return ({2: 90.0, 3: 35.0, 4: 600.0, 7: 280.0, 15: 30.0}[i], {2: 12.0, 3: 5.0, 4: 80.0, 7: 30.0, 15: 8.0}[i], 1, 0.0)
        if i <= 11:
            return (2830.0 + {5: 120.0, 6: -130.0, 8: 20.0, 9: 10.0, 10: 90.0, 11: -80.0}.get(i, 0.0), 30.0, 1, None)
        return (2000.0, 600.0, 1, 0.0)
    if col.startswith("Soilgrid-"):
        return {
            "Soilgrid-bdod": (130.0, 15.0, 1, 0.0), "Soilgrid-cec": (220.0, 60.0, 1, 0.0),
            "Soilgrid-cfvo": (120.0, 50.0, 1, 0.0), "Soilgrid-clay": (230.0, 70.0, 1, 0.0),
            "Soilgrid-nitrogen": (300.0, 120.0, 1, 0.0), "Soilgrid-sand": (380.0, 120.0, 1, 0.0),
            "Soilgrid-silt": (380.0, 90.0, 1, 0.0),
        }[col]
    if col.startswith("LandCover-"):
        return (9.0, 4.0, 1, 1.0) if col != "LandCover-13" else (70.0, 15.0, 1, 0.0)
    return (3.0, 3.0, 1, 0.0)  # human footprint


# ----------------------------------------------------------------------------------------------
# Main entry point
# ----------------------------------------------------------------------------------------------


def _check_args(surveys: int, species: int, test_fraction: float, event_year: int) -> None:
    if not isinstance(surveys, (int, np.integer)) or surveys < MIN_SURVEYS:
        raise UserError(f"--surveys must be an integer >= {MIN_SURVEYS}, got {surveys!r}")
    if not isinstance(species, (int, np.integer)) or not 1 <= species <= MAX_SPECIES_ID:
        raise UserError(f"--species must be an integer in [1, {MAX_SPECIES_ID}], got {species!r}")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise UserError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    if event_year not in BIOCLIM_YEARS:
        raise UserError(
            f"event_year must be in {BIOCLIM_YEARS[0]}..{BIOCLIM_YEARS[-1]} (covered by both cubes), got {event_year!r}"
        )


@dataclass
class _Surveys:
    """Every survey's draws, indexed in generation order; `split_idx` lists each split's surveys by id."""

    ids: np.ndarray
    short_ids: np.ndarray
    split_idx: dict[str, list[int]]
    lon: np.ndarray
    lat: np.ndarray
    z: np.ndarray  # [n, env latents]
    u: np.ndarray  # the NDVI latent's own part
    v: np.ndarray  # the NDVI latent
    e: np.ndarray  # the extreme event's intensity
    labels: np.ndarray  # bool [n, species]
    forced_empty: list[int]  # ids of train surveys emptied so that the train split has a few empty surveys
    years: np.ndarray
    uncertainty: np.ndarray
    area: np.ndarray


def synth_geoplant(
    raw_dir: Path | str,
    surveys: int = DEFAULT_SURVEYS,
    species: int = DEFAULT_SPECIES,
    seed: int = DEFAULT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    progress: Callable[[int, int], None] | None = None,
    *,
    event_year: int = DEFAULT_EVENT_YEAR,
    workers: int | None = None,
    version: int = GENERATOR_VERSION,
) -> dict:
    """Write a synthetic GLC24-layout dataset with planted truth into ``raw_dir``; return a summary.

    ``progress(done, total)`` is called after each survey's files are written (total = surveys).
    ``workers`` threads write the per-survey files (default: up to 4, bounded by the CPU count);
    the output does not depend on it. An existing folder is refused unless it is empty or holds an
    earlier output of this generator (whose files are then replaced). ``version`` picks the
    generator version (GENERATOR_VERSIONS: 3, the default, or 2 to reproduce the v2 study).
    """
    t_start = time.perf_counter()
    raw_dir = Path(raw_dir)
    _check_args(surveys, species, test_fraction, event_year)
    if version not in GENERATOR_VERSIONS:
        raise UserError(f"--version must be one of {', '.join(map(str, GENERATOR_VERSIONS))}, got {version!r}")
    gen = GENERATOR_VERSIONS[version]
    claim_output_dir(raw_dir, GENERATOR_NAME, _TOP_LEVEL_OUTPUTS)
    world = _World(seed, int(species), gen)
    s = _draw_surveys(world, seed, int(surveys), test_fraction)
    empty_surveys = _write_tables(raw_dir, world, s, _tabular_values(world, seed, s))
    nbytes = _write_survey_files(raw_dir, seed, s, event_year, gen.background_sd, workers, progress)
    _write_truth(raw_dir, world, seed, event_year, s, empty_surveys)
    finish_output_dir(raw_dir)
    return {
        "raw_dir": str(raw_dir),
        "layout": "glc24",
        "seed": int(seed),
        "surveys": len(s.ids),
        "train_surveys": len(s.split_idx["train"]),
        "test_surveys": len(s.split_idx["test"]),
        "species": int(species),
        "event_year": int(event_year),
        "short_survey_ids": sorted(int(x) for x in s.short_ids),
        "empty_surveys": {split: len(empty_surveys[split]) for split in SPLITS},
        "mean_prevalence": float(s.labels.mean()),
        "files": 4 * len(s.ids) + 2 + 2 * len(ENV_TABLES) + 2,
        "bytes_per_survey_files": int(nbytes),
        "truth": str(raw_dir / "truth.json"),
        "seconds": round(time.perf_counter() - t_start, 3),
    }



def _draw_surveys(world: _World, seed: int, n: int, test_fraction: float) -> _Surveys:
    """Ids, split, locations, latents, labels and metadata of every survey (each from its own stream)."""
    ids, is_test, short_ids = _survey_ids(seed, n, test_fraction)
    train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    loc_rng = _rng(seed, _S_LOC)
    lon = np.round(loc_rng.uniform(*LON_RANGE, size=n), 5)
    lat = np.round(loc_rng.uniform(*LAT_RANGE, size=n), 5)
    z = world.env(lon, lat)
    lat_rng = _rng(seed, _S_LATENT)
    u = lat_rng.standard_normal(n)
    e = lat_rng.standard_normal(n)
    v = world.ndvi_latent(z, u)
    labels, forced_empty = _labels(world, seed, z, v, e, ids, train_idx)
    meta_rng = _rng(seed, _S_META)
    years = meta_rng.integers(2017, 2022, size=n)
    unc = meta_rng.choice([0.0, 1.0, 3.0, 5.0, 10.0, 20.0], size=n)
    unc[meta_rng.random(n) < 0.03] = np.nan
    area = meta_rng.choice([4.0, 9.0, 10.0, 25.0, 50.0, 79.0, 100.0, 707.0], size=n)
    area[meta_rng.random(n) < 0.05] = np.nan
    split_idx = {"train": sorted(train_idx.tolist(), key=lambda i: ids[i]), "test": sorted(test_idx.tolist(), key=lambda i: ids[i])}
    return _Surveys(ids, short_ids, split_idx, lon, lat, z, u, v, e, labels, forced_empty, years, unc, area)


def _survey_ids(seed: int, n: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, is_test, the short ids): about 0.3 % of the ids have three digits, as in the real data."""
    n_test = int(round(n * float(test_fraction)))
    if test_fraction > 0:
        n_test = min(max(n_test, 1), n - 1)
    split_rng = _rng(seed, _S_SPLIT)
    order = split_rng.permutation(n)
    is_test = np.zeros(n, dtype=bool)
    is_test[order[:n_test]] = True

    id_rng = _rng(seed, _S_IDS)
    n_short = max(2, int(round(0.003 * n)))
    long_ids = id_rng.choice(np.arange(1000, 4_000_000), size=n - n_short, replace=False)
    short_ids = id_rng.choice(np.arange(100, 1000), size=n_short, replace=False)
    ids = np.empty(n, dtype=np.int64)
    train_idx = np.flatnonzero(~is_test)
    test_idx = np.flatnonzero(is_test)
    # Short ids: the first in train, the second in test (when there is a test split), the rest anywhere.
    short_pos = [int(train_idx[0])] + ([int(test_idx[0])] if n_test else [])
    rest = [i for i in id_rng.permutation(n) if i not in short_pos]
    short_pos += rest[: n_short - len(short_pos)]
    mask = np.zeros(n, dtype=bool)
    mask[short_pos] = True
    ids[mask] = short_ids
    ids[~mask] = long_ids
    return ids, is_test, short_ids


def _labels(world: _World, seed: int, z: np.ndarray, v: np.ndarray, e: np.ndarray, ids: np.ndarray,
            train_idx: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Presence [n, k] drawn from the planted model, and the ids of train surveys emptied on purpose."""
    n, k = len(ids), len(world.species_ids)
    lab_rng = _rng(seed, _S_LABELS)
    eps = lab_rng.normal(0.0, LOGIT_NOISE_SD, size=(n, k))
    logit = world.score(z, v, e) + eps - world.threshold
    labels = lab_rng.random((n, k)) < _sigmoid(logit)
    # Real data has PA surveys with no species present: make sure the train split has a few.
    n_empty_min = max(1, int(round(0.005 * len(train_idx))))
    empty_train = [i for i in train_idx if not labels[i].any()]
    forced_empty: list[int] = []
    if len(empty_train) < n_empty_min:
        cands = sorted((int(labels[i].sum()), int(ids[i]), int(i)) for i in train_idx if labels[i].any())
        for _, _, i in cands[: n_empty_min - len(empty_train)]:
            labels[i] = False
            forced_empty.append(int(ids[i]))
    return labels, forced_empty


def _tabular_values(world: _World, seed: int, s: _Surveys) -> dict[str, tuple[np.ndarray, int]]:
    """Every environmental column: (values per survey, decimals written)."""
    n = len(s.ids)
    env_rng = _rng(seed, _S_ENV)
    table_values: dict[str, tuple[np.ndarray, int]] = {}
    for col, (latent, off, slope, noise) in world.gen.signal_columns.items():
        zj = s.z[:, ENV_LATENTS.index(latent)]
        table_values[col] = (off + slope * (zj + noise * env_rng.standard_normal(n)), 1)
    for col in world.noise_columns:
        off, scale, dec, lower = _noise_column_spec(col)
        x = off + scale * (world.noise_fields[col](s.lon, s.lat) + 0.3 * env_rng.standard_normal(n))
        if col.startswith("LandCover-") and col != "LandCover-13":
            x = np.clip(np.rint(x), 1.0, 17.0)
        if lower is not None:
            x = np.maximum(x, lower)
        if col == _MISSING_ENV_COLUMN:
            x = x.copy()
            x[env_rng.random(n) < _MISSING_ENV_RATE] = np.nan
        table_values[col] = (x, dec)
    return table_values


def _write_tables(raw_dir: Path, world: _World, s: _Surveys, table_values: dict) -> dict[str, list[int]]:
    """The metadata and environmental CSVs of both splits; returns each split's surveys without species."""
    empty_surveys: dict[str, list[int]] = {}
    for split in SPLITS:
        rows = [",".join(METADATA_COLUMNS)]
        empties = []
        for i in s.split_idx[split]:
            common = [
                _fmt(s.lon[i], 5), _fmt(s.lat[i], 5), str(int(s.years[i])), _fmt(s.uncertainty[i], 1), _fmt(s.area[i], 1),
                _region(s.lon[i], s.lat[i]), _country(s.lon[i], s.lat[i]),
            ]
            present = np.flatnonzero(s.labels[i])
            if present.size == 0:
                empties.append(int(s.ids[i]))
                rows.append(",".join(common + ["", str(int(s.ids[i]))]))
            for j in present:
                rows.append(",".join(common + [f"{float(world.species_ids[j]):.1f}", str(int(s.ids[i]))]))
        empty_surveys[split] = empties
        metadata_path(raw_dir, split).write_text("\n".join(rows) + "\n")
        for table, (_, _, cols) in ENV_TABLES.items():
            p = env_table_path(raw_dir, table, split)
            p.parent.mkdir(parents=True, exist_ok=True)
            lines = [",".join(("surveyId",) + cols)]
            for i in s.split_idx[split]:
                lines.append(",".join([str(int(s.ids[i]))] + [_fmt(table_values[c][0][i], table_values[c][1]) for c in cols]))
            p.write_text("\n".join(lines) + "\n")
    return empty_surveys


def _write_survey_files(raw_dir: Path, seed: int, s: _Surveys, event_year: int, background_sd: float,
                        workers: int | None, progress: Callable[[int, int], None] | None) -> int:
    """Every survey's patches and cubes, written by `workers` threads; returns their bytes."""
    landsat_event = LANDSAT_YEARS.index(event_year)
    bioclim_event = BIOCLIM_YEARS.index(event_year)
    for split in SPLITS:  # the folders exist even for an empty split, as in the real release
        rgb_patch_path(raw_dir, split, 1234).parent.parent.parent.mkdir(parents=True, exist_ok=True)
        nir_patch_path(raw_dir, split, 1234).parent.parent.parent.mkdir(parents=True, exist_ok=True)
        landsat_cube_path(raw_dir, split, 0).parent.mkdir(parents=True, exist_ok=True)
        bioclim_cube_path(raw_dir, split, 0).parent.mkdir(parents=True, exist_ok=True)
    jobs = [(split, i) for split in SPLITS for i in s.split_idx[split]]
    total = len(jobs)
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    workers = max(1, int(workers))
    nbytes = 0

    def job(si: tuple[str, int]) -> int:
        split, i = si
        return _write_survey(raw_dir, seed, split, int(s.ids[i]), float(s.v[i]), float(s.e[i]), landsat_event, bioclim_event,
                             background_sd)

    if workers == 1:
        for done, si in enumerate(jobs, 1):
            nbytes += job(si)
            if progress is not None:
                progress(done, total)
        return nbytes
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Bounded window of in-flight surveys keeps memory flat for any number of surveys.
        window = 4 * workers
        futures = []
        done = 0
        for si in jobs:
            futures.append(pool.submit(job, si))
            if len(futures) >= window:
                nbytes += futures.pop(0).result()
                done += 1
                if progress is not None:
                    progress(done, total)
        for f in futures:
            nbytes += f.result()
            done += 1
            if progress is not None:
                progress(done, total)
    return nbytes


def _write_truth(raw_dir: Path, world: _World, seed: int, event_year: int, s: _Surveys, empty_surveys: dict) -> None:
    """truth_latents.csv, then truth.json (last: its presence marks a complete dataset)."""
    lat_lines = [",".join(["surveyId", "split", *ENV_LATENTS, "ndvi_unique", "ndvi", "event"])]
    for split in SPLITS:
        for i in s.split_idx[split]:
            vals = [*s.z[i], s.u[i], s.v[i], s.e[i]]
            lat_lines.append(",".join([str(int(s.ids[i])), split] + [f"{x:.6f}" for x in vals]))
    (raw_dir / "truth_latents.csv").write_text("\n".join(lat_lines) + "\n")
    k = s.labels.shape[1]
    observed = {split: s.labels[s.split_idx[split]].mean(axis=0) if s.split_idx[split] else np.full(k, np.nan) for split in SPLITS}
    truth = _truth_dict(world, seed, len(s.ids), k, event_year, s.split_idx, s.ids, observed, s.forced_empty, empty_surveys)
    (raw_dir / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=False) + "\n")


def _truth_dict(world: _World, seed: int, n: int, k: int, event_year: int, split_idx: dict,
                ids: np.ndarray, observed: dict, forced_empty: list[int], empty_surveys: dict) -> dict:
    r = lambda x: round(float(x), 6)  # noqa: E731
    gen = world.gen
    species = []
    for j in range(k):
        species.append({
            "speciesId": int(world.species_ids[j]),
            "weights": {"tabular": r(world.a[j]), "ndvi": r(world.b[j]), "event": r(world.c[j])},
            "prevalence": r(world.prevalence[j]),
            "observed_prevalence": {s: (r(observed[s][j]) if split_idx[s] else None) for s in observed},
            "threshold": r(world.threshold[j]),
            "niche": {name: r(world.niche[j, i]) for i, name in enumerate(NICHE_LATENTS)},
            "responds_to_event": bool(world.c[j] != 0.0),
        })
    weights = expected_ndvi_weight(4)
    centre = [f"r{i}c{j}" for i in (1, 2) for j in (1, 2)]
    env_cols = [
        {"column": c, "table": next(t for t, spec in ENV_TABLES.items() if c in spec[2]), "latent": lat,
         "offset": off, "slope": slope, "noise_sd": slope * noise}
        for c, (lat, off, slope, noise) in gen.signal_columns.items()
    ]
    niche_cols = ", ".join(c for c, spec in gen.signal_columns.items() if spec[0] != "productivity")
    prod_cols = " and ".join(c for c, spec in gen.signal_columns.items() if spec[0] == "productivity")
    if gen.version == 2:  # v2's text, byte for byte
        niche_text = ("that are written near-linearly (slope plus 10% noise) into the tabular columns Bio1, Bio12, "
                      "Soilgrid-phh2o and Elevation; a_k in [1.6, 2.4] makes this easy, near-linear view dominant. ")
    else:
        niche_text = (f"that are written near-linearly (slope plus 10-15% noise) into the tabular columns {niche_cols} "
                      f"(several columns per latent, as real bioclimatic variables are correlated); "
                      f"a_k in [{gen.a_range[0]:g}, {gen.a_range[1]:g}], |b_k| in [{gen.b_range[0]:g}, {gen.b_range[1]:g}]. ")
    description = (
        "Species k is present in a survey with probability sigmoid(a_k*T_k + b_k*v + c_k*e + eps - t_k), "
        "eps ~ N(0, 0.5^2). T_k is a linear niche (unit-norm weights) over four smooth spatial latents "
        "(temperature, moisture, soil_ph, elevation) " + niche_text + "All other tabular columns are independent smooth noise fields. "
        f"v is a vegetation latent, v = {gen.ndvi_env_corr:g}*productivity + {gen.ndvi_unique:.3f}*unique, where productivity is written into "
        f"{prod_cols} (so v is partly redundant with the tabular data) and unique is local, per-survey and "
        f"visible only in the Sentinel-2 patch: per-pixel NDVI = (nir-red)/(nir+red) = {NDVI_BASE} + "
        f"{NDVI_AMPLITUDE}*v*w(r) + a smooth background texture (sd {gen.background_sd}, independent of v) + "
        f"pixel noise, w(r) = exp(-r^2/(2*{PATCH_DECAY_SIGMA_PX:g}^2)) with r the distance in pixels from the "
        "patch centre, so the signal sits in the centre and is nearly absent at the edges. Red and NIR share a random brightness that cancels in "
        "the ratio, so NDVI (a band ratio) is the clean signal; green and blue are pure noise, independent of "
        "everything. e is the local intensity of an extreme-event (heatwave) year: only in that year do the "
        "Landsat cube (nir drops, red/swir1/swir2 rise, in quarter 3 and half as much in quarter 2) and the "
        "bioclimatic cube (tasmax/tas/tasmin up and pr down in June-August) depart from noise plus a smooth "
        "trend; e is independent of the tabular data and a subset of species (responds_to_event) has c_k != 0. "
        "A correct model and attribution must find: tabular > sentinel2 on its own, red and NIR above green and "
        "blue, the centre sub-patches above the edge ones, the event year above every other year of the time "
        f"series, and {'/'.join(c for c in gen.signal_columns if gen.signal_columns[c][0] != 'productivity')} "
        f"(then {'/'.join(c for c in gen.signal_columns if gen.signal_columns[c][0] == 'productivity')}) above every other tabular column."
    )
    return {
        "generator": GENERATOR_NAME,
        "generator_version": gen.version,
        "layout": "glc24",
        "seed": int(seed),
        "surveys": n,
        "train_surveys": len(split_idx["train"]),
        "test_surveys": len(split_idx["test"]),
        "species_count": k,
        "event_year": int(event_year),
        "informative_bands": ["red", "nir"],
        "noise_bands": ["green", "blue"],
        "patch_decay": {
            "description": "per-pixel NDVI = base + amplitude*v*w(r) + background_sd*smooth_waves + N(0, pixel_noise^2), "
                           "w(r) = exp(-r^2 / (2 sigma^2)), r = distance in pixels from the patch centre (63.5, 63.5); "
                           "the background texture is independent of v, so the centre carries the signal and the "
                           "edges almost none",
            "background_sd": gen.background_sd,
            "base": NDVI_BASE, "amplitude": NDVI_AMPLITUDE, "sigma_px": PATCH_DECAY_SIGMA_PX,
            "pixel_noise": NDVI_PIXEL_NOISE, "patch_size": PATCH_SIZE, "jpeg_quality": JPEG_QUALITY,
            "grid4_mean_weight": [[round(x, 4) for x in row] for row in weights],
            "grid4_centre_cells": centre,
        },
        "landsat": {
            "bands": list(LANDSAT_BANDS), "years": [LANDSAT_YEARS[0], LANDSAT_YEARS[-1]],
            "axes": ["band", "quarter", "year"],
            "event_effect_per_unit_e_quarter3": dict(zip(LANDSAT_BANDS, map(float, _LANDSAT_EVENT))),
            "event_effect_quarter2_factor": 0.5, "noise_relative_sd": _LANDSAT_NOISE_REL,
        },
        "bioclim": {
            "variables": list(BIOCLIM_VARIABLES), "years": [BIOCLIM_YEARS[0], BIOCLIM_YEARS[-1]],
            "axes": ["variable", "year", "month"], "event_months": [m + 1 for m in SUMMER_MONTHS],
            "event_effect_per_unit_e": dict(_BIOCLIM_EVENT),
            "units": "temperatures in K x 10, precipitation on the scale of the real cubes",
        },
        "latents": {
            "env": list(ENV_LATENTS), "niche": list(NICHE_LATENTS),
            "ndvi": f"{gen.ndvi_env_corr:g}*productivity + {gen.ndvi_unique:.3f}*ndvi_unique", "ndvi_env_corr": gen.ndvi_env_corr,
            "event": "N(0,1) per survey, independent of everything else",
            "file": "truth_latents.csv",
        },
        "logit_noise_sd": LOGIT_NOISE_SD,
        "env_columns_with_signal": list(gen.signal_columns),
        "env_signal_columns": env_cols,
        "env_missing_values": {"column": _MISSING_ENV_COLUMN, "rate": _MISSING_ENV_RATE},
        "forced_empty_surveys": forced_empty,
        "empty_surveys": empty_surveys,
        "species": species,
        "description": description,
    }


# ----------------------------------------------------------------------------------------------
# Fault injection (for tests of `prepare`)
# ----------------------------------------------------------------------------------------------


def _read_metadata(raw_dir: Path, split: str) -> tuple[list[int], list[int]]:
    """(survey ids in file order without duplicates, ids whose speciesId is empty)."""
    seen: dict[int, None] = {}
    empty: list[int] = []
    with metadata_path(raw_dir, split).open(newline="") as f:
        for row in csv.DictReader(f):
            sid = int(row["surveyId"])
            seen.setdefault(sid, None)
            if row["speciesId"] == "":
                empty.append(sid)
    return list(seen), empty


def inject_faults(raw_dir: Path | str, kinds: Sequence[str], seed: int = 0) -> list[dict]:
    """Corrupt a few train files of a synthetic dataset in place; return one record per fault.

    Kinds: ``missing_file`` (delete an RGB JPEG), ``corrupt_file`` (replace an RGB JPEG by its first
    bytes followed by garbage, so it cannot be decoded), ``wrong_shape`` (a Landsat cube of shape
    [6, 4, 20]), ``nan_values`` (NaN in one year of a Landsat cube and of a bioclimatic cube),
    ``empty_species`` (nothing changed: lists the surveys written with an empty speciesId).
    Each record: ``{"kind", "split", "surveyId", "file" (relative to raw_dir), "detail"}``; every
    kind hits a different survey.
    """
    raw_dir = Path(raw_dir)
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kind(s) {unknown}; known: {', '.join(FAULT_KINDS)}")
    split = "train"
    ids, empty = _read_metadata(raw_dir, split)
    rng = _rng(seed, 900)
    pool = [i for i in ids if i not in set(empty)]
    pool = [pool[j] for j in rng.permutation(len(pool))]
    records: list[dict] = []
    rel = lambda p: p.relative_to(raw_dir).as_posix()  # noqa: E731

    for kind in kinds:
        if kind == "empty_species":
            for sid in empty:
                records.append({"kind": kind, "split": split, "surveyId": sid, "file": rel(metadata_path(raw_dir, split)),
                                "detail": "survey listed with an empty speciesId (no species present)"})
            continue
        if not pool:
            raise ValueError(f"no survey left in {raw_dir} to inject {kind!r} into")
        sid = int(pool.pop(0))
        if kind == "missing_file":
            p = rgb_patch_path(raw_dir, split, sid)
            p.unlink()
            records.append({"kind": kind, "split": split, "surveyId": sid, "file": rel(p), "detail": "RGB patch deleted"})
        elif kind == "corrupt_file":
            p = rgb_patch_path(raw_dir, split, sid)
            head = p.read_bytes()[:64]
            p.write_bytes(head + rng.integers(0, 256, size=256, dtype=np.uint8).tobytes())
            records.append({"kind": kind, "split": split, "surveyId": sid, "file": rel(p),
                            "detail": "RGB patch truncated to 64 header bytes + 256 garbage bytes"})
        elif kind == "wrong_shape":
            p = landsat_cube_path(raw_dir, split, sid)
            t = torch.load(p, weights_only=True)
            torch.save(t[:, :, :20].clone(), p)
            records.append({"kind": kind, "split": split, "surveyId": sid, "file": rel(p),
                            "detail": "Landsat cube saved with shape [6, 4, 20] (last year dropped)"})
        elif kind == "nan_values":
            year = int(rng.integers(0, len(BIOCLIM_YEARS)))
            p = landsat_cube_path(raw_dir, split, sid)
            t = torch.load(p, weights_only=True)
            t[:, :, year] = float("nan")  # in place: keeps the real, non-contiguous layout
            torch.save(t, p)
            q = bioclim_cube_path(raw_dir, split, sid)
            b = torch.load(q, weights_only=True)
            b[:, year, :] = float("nan")
            torch.save(b, q)
            for path, what in ((p, "Landsat"), (q, "bioclimatic")):
                records.append({"kind": kind, "split": split, "surveyId": sid, "file": rel(path),
                                "detail": f"{what} cube: every value of year {2000 + year} set to NaN",
                                "year": 2000 + year})
    return records
