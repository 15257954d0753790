"""Synthetic TaxaBench-8k data in the real file layout, with planted, documented truth.

``miam synth taxabench RAW_DIR [--observations N] [--species K] [--seed S]`` calls
``synth_taxabench(raw_dir, observations=N, species=K, seed=S)`` (defaults 600, 12, 0) and writes::

    test_df.csv                                iNaturalist export columns: id, observed_on, ...,
                                               latitude, longitude, ..., scientific_name, common_name,
                                               iconic_taxon_name, taxon_id (one row per observation)
    taxabench_images/<id>.jpg                  ground photo, RGB 96x72 (landscape, like most photos)
    taxabench_sound/<id>.wav | <id>.flac       mono recording, 16 or 22.05 kHz, 2-4 s
    taxabench_sound/<id>.m4a                   a few: an MP4 container libsndfile cannot read
    sat_images/sentinel/<id>_<lat>_<lon>.jpeg  Sentinel-2 RGB chip, 64x64
    bioclim_elevation_scaled.npy               float16 [H, W, 20] (default 90 x 180, 2 degree cells):
                                               elevation then bio1..bio19, z-scored over land, NaN over
                                               the sea; cell of (lon, lat): row = int((90 - lat) H / 180),
                                               col = int((lon + 180) W / 360) (the SINR/TaxaBind file)
    embeddings.pt                              NOT in the real release: per-modality vectors standing for
                                               precomputed TaxaBind encoder outputs, {"ids": [...],
                                               "ground"|"satellite"|"audio"|"environment"|"location": float32 [N, 16]}
    truth.json                                 the planted truth (written last: marks a complete dataset)

Planted truth: each observation is one species (multi-class). The five modalities carry the species
with decreasing strength: **ground** (a disc of the species' colour in 95 % of photos) > **audio** (the
species' call, a tone with two harmonics at a species frequency, in 70 % of recordings; the others hold
noise only) > **environment** (species niches: an observation's cell is drawn on land with weight
exp(-|z_cell - mu_k|^2 / (2 * 0.8^2)) over four latent climate fields that the 20 variables mix) >
**satellite** (faint stripes at a species angle in half of the chips, over a habitat colour from the
local climate) > **location** (informative only through the niches). Species abundances are uneven
(Zipf-like), so `--min-per-class` has rare species to drop. A few observations sit in sea cells (their
environment is NaN: invalid tokens) and a few recordings are `.m4a` (fault `unreadable_audio` without
PyAV). Same arguments, same bytes.

Calibration (600 observations, 12 species, seed 1; a logistic-regression probe on the prepared raw
tokens, images pooled to per-token mean/std): top-1 ground 0.88, audio 0.76, environment 0.58,
location 0.53, satellite 0.28. The satellite stripes have a random phase, a texture that a linear
probe on pooled tokens cannot see (a model has to learn it non-linearly); the embeddings route
(`embeddings.pt`) follows the planted order exactly.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from miam_cli.errors import UserError
from miam_cli.synth.output import claim_output_dir, finish_output_dir

GENERATOR_NAME = "miam synth taxabench"
DEFAULT_OBSERVATIONS = 600
DEFAULT_SPECIES = 12
DEFAULT_SEED = 0
GRID_SHAPE = (90, 180)
ENV_VARIABLES = ("elevation",) + tuple(f"bio{i}" for i in range(1, 20))
LATENTS = ("temperature", "moisture", "seasonality", "elevation")
MODALITY_STRENGTH = ("ground", "audio", "environment", "satellite", "location")
INFORMATIVE = {"ground": 0.95, "audio": 0.7, "satellite": 0.5}
NICHE_SD = 0.8
LAND_FRACTION = 0.38
SEA_FRACTION = 0.02  # observations put in sea cells (coastal records): environment NaN
M4A_FRACTION = 0.03
PHOTO_SIZE = (96, 72)  # width, height
SAT_SIZE = 64
EMBED_DIM = 16
EMBED_SIGNAL = {"ground": 2.5, "audio": 1.5, "environment": 1.0, "satellite": 0.6, "location": 0.3}
CSV_COLUMNS = (
    "id", "observed_on", "time_observed_at", "user_id", "user_login", "quality_grade", "license", "url", "image_url",
    "sound_url", "place_guess", "latitude", "longitude", "positional_accuracy", "species_guess", "scientific_name",
    "common_name", "iconic_taxon_name", "taxon_id",
)
OUTPUTS = ("test_df.csv", "taxabench_images", "taxabench_sound", "sat_images", "bioclim_elevation_scaled.npy",
           "embeddings.pt", "truth.json")
_M4A_BYTES = b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A mp42isom\x00\x00\x00\x00"


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *keys])


# ------------------------------------------------------------------ the world: climate grid and land
def _sphere_field(rng: np.random.Generator, xyz: np.ndarray, lengthscale: float, features: int = 64) -> np.ndarray:
    """A smooth random field on the sphere (random Fourier features of the 3-D unit vector), z-scored."""
    w = rng.normal(0.0, 1.0 / lengthscale, size=(features, 3))
    f = np.cos(xyz @ w.T + rng.uniform(0, 2 * np.pi, features)).sum(axis=-1)
    return (f - f.mean()) / f.std()


def cell_centres(shape=GRID_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    lat = 90.0 - (np.arange(h) + 0.5) * 180.0 / h
    lon = -180.0 + (np.arange(w) + 0.5) * 360.0 / w
    return np.meshgrid(lon, lat)


def make_world(seed: int, shape=GRID_SHAPE) -> dict:
    """Latent climate fields [H, W, 4], land mask, and the 20 z-scored variables [H, W, 20] (NaN at sea)."""
    rng = _rng(seed, 1)
    lon, lat = cell_centres(shape)
    la, lo = np.radians(lat), np.radians(lon)
    xyz = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1)
    land_field = _sphere_field(rng, xyz, 0.6)
    land = land_field > np.quantile(land_field, 1 - LAND_FRACTION)
    latents = np.stack([
        1.5 * np.cos(la) + 0.6 * _sphere_field(rng, xyz, 0.5),  # temperature: warm tropics
        _sphere_field(rng, xyz, 0.4),  # moisture
        np.abs(lat) / 45.0 + 0.5 * _sphere_field(rng, xyz, 0.7),  # seasonality: grows with latitude
        np.maximum(0.0, _sphere_field(rng, xyz, 0.3) + 0.5),  # elevation
    ], -1)
    latents = (latents - latents[land].mean(0)) / latents[land].std(0)
    loadings = np.zeros((len(ENV_VARIABLES), len(LATENTS)))
    loadings[0, 3] = 1.0
    loadings[1:12, 0] = 1.0  # bio1..bio11: temperature variables
    loadings[12:, 1] = 1.0  # bio12..bio19: precipitation variables
    loadings[1:, :] += rng.normal(0, 0.3, size=(len(ENV_VARIABLES) - 1, len(LATENTS)))
    noise = np.stack([_sphere_field(rng, xyz, 0.25, 32) for _ in ENV_VARIABLES], -1)
    env = latents @ loadings.T + 0.2 * noise
    env = (env - env[land].mean(0)) / env[land].std(0)
    env[~land] = np.nan
    return {"latents": latents, "land": land, "env": env.astype(np.float16), "loadings": loadings}


# ------------------------------------------------------------------ species and observations
_SYLLABLES = ("ca", "lo", "mi", "ra", "te", "nu", "phy", "lis", "dor", "ae", "xi", "bra", "sen", "tho", "ul", "vi")


def _latin(rng: np.random.Generator, parts: int, ending: str) -> str:
    return "".join(rng.choice(_SYLLABLES, parts)) + ending


def _palette(k: int, rng: np.random.Generator) -> np.ndarray:
    """k well-separated colours: hues evenly around the wheel, alternating light and dark."""
    import colorsys

    hues = (np.arange(k) / k + rng.uniform(0, 1)) % 1.0
    return np.array([colorsys.hsv_to_rgb(h, 0.85, 0.95 if j % 2 else 0.55) for j, h in enumerate(hues)]) * 255


def make_species(seed: int, k: int, world: dict) -> list[dict]:
    rng = _rng(seed, 2)
    land_cells = np.argwhere(world["land"])
    genera = [_latin(rng, 2, "us").capitalize() for _ in range(max(1, k // 3))]
    freqs = np.exp(np.linspace(np.log(500.0), np.log(3500.0), k))[rng.permutation(k)]
    palette = _palette(k, rng)
    taxon_ids = np.sort(1000 + rng.choice(998_999, size=k, replace=False))
    weights = 1.0 / np.arange(1, k + 1) ** 0.8  # Zipf-like abundances: a few rare species
    weights = weights[rng.permutation(k)] / weights.sum()
    species = []
    for j in range(k):
        r, c = land_cells[rng.integers(len(land_cells))]
        species.append({
            "class": j, "taxon_id": int(taxon_ids[j]),
            "scientific_name": f"{genera[j % len(genera)]} {_latin(rng, 2, 'is')}",
            "common_name": f"synthetic {_latin(rng, 1, 'a')}",
            "abundance": float(weights[j]),
            "niche_centre": [round(float(x), 4) for x in world["latents"][r, c]],
            "call_hz": round(float(freqs[j]), 1),
            "colour_rgb": [int(x) for x in palette[j]],
            "stripe_angle_deg": round(float(180.0 * j / k), 1),
        })
    return species


def draw_observations(seed: int, n: int, species: list[dict], world: dict) -> dict:
    """Species per observation (each species at least once), its cell (by niche), jittered coordinates."""
    rng = _rng(seed, 3)
    k = len(species)
    p = np.array([s["abundance"] for s in species])
    cls = np.concatenate([np.arange(k), rng.choice(k, size=n - k, p=p)])[rng.permutation(n)]
    land_cells = np.argwhere(world["land"])
    z = world["latents"][world["land"]]
    rows, cols = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for j in range(k):
        members = np.flatnonzero(cls == j)
        d2 = ((z - np.array(species[j]["niche_centre"])) ** 2).sum(1)
        w = np.exp(-d2 / (2 * NICHE_SD**2))
        picked = land_cells[rng.choice(len(land_cells), size=len(members), p=w / w.sum())]
        rows[members], cols[members] = picked[:, 0], picked[:, 1]
    at_sea = rng.choice(n, size=max(1, int(round(SEA_FRACTION * n))), replace=False)
    sea_cells = np.argwhere(~world["land"])
    picked = sea_cells[rng.choice(len(sea_cells), size=len(at_sea))]
    rows[at_sea], cols[at_sea] = picked[:, 0], picked[:, 1]
    h, w = world["land"].shape
    # jitter inside the cell, away from its edges, so that rounding never moves a point to a neighbour
    lat = np.round(90.0 - (rows + rng.uniform(0.1, 0.9, n)) * 180.0 / h, 6)
    lon = np.round(-180.0 + (cols + rng.uniform(0.1, 0.9, n)) * 360.0 / w, 6)
    ids = np.sort(10_000_000 + rng.choice(240_000_000, size=n, replace=False))
    m4a = rng.choice(np.setdiff1d(np.arange(n), at_sea), size=max(1, int(round(M4A_FRACTION * n))), replace=False)
    return {"ids": ids, "cls": cls, "rows": rows, "cols": cols, "lat": lat, "lon": lon, "at_sea": np.sort(at_sea),
            "m4a": np.sort(m4a)}


# ------------------------------------------------------------------ per-observation files
def ground_photo(rng: np.random.Generator, colour: list[int] | None) -> Image.Image:
    """Blotchy background, with a disc of the species' colour in the centre (or a random colour)."""
    w, h = PHOTO_SIZE
    coarse = rng.normal(110, 30, size=(h // 12 + 1, w // 12 + 1, 3))
    background = np.kron(coarse, np.ones((12, 12, 1)))[:h, :w]
    yy, xx = np.mgrid[:h, :w]
    disc = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < 26**2
    fill = np.array(colour if colour is not None else rng.uniform(30, 225, 3))
    image = np.where(disc[..., None], fill, background) + rng.normal(0, 12, size=(h, w, 3))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")


def satellite_chip(rng: np.random.Generator, env_cell: np.ndarray, angle: float | None) -> Image.Image:
    """Habitat colour from the local climate (green with moisture, brown with heat); sea is blue."""
    if np.isnan(env_cell).any():
        base = np.array([30.0, 60.0, 120.0])
    else:
        t, m = float(env_cell[1]), float(env_cell[12])  # bio1 (heat), bio12 (rain); blurred by lighting below
        base = np.array([90 + 10 * t, 100 + 12 * m, 60.0]) + rng.normal(0, 15, 3)
    yy, xx = np.mgrid[:SAT_SIZE, :SAT_SIZE]
    image = base + rng.normal(0, 20, size=(SAT_SIZE, SAT_SIZE, 3))
    if angle is not None:
        a, phase = np.radians(angle), rng.uniform(0, 2 * np.pi)  # random phase: texture, not a fixed template
        image += 8 * np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / 8.0 + phase)[..., None]
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")


def recording(rng: np.random.Generator, call_hz: float | None, rate: int) -> np.ndarray:
    """White noise, plus (if the species calls) pulses of a tone with two harmonics."""
    n = int(rng.uniform(2.0, 4.0) * rate)
    t = np.arange(n) / rate
    x = rng.normal(0, 0.05, n)
    if call_hz is not None:
        pulse = (np.sin(2 * np.pi * 2.0 * t + rng.uniform(0, 6.28)) > -0.3).astype(float)
        tone = sum(a * np.sin(2 * np.pi * call_hz * h * t) for h, a in ((1, 0.25), (2, 0.1), (3, 0.05)))
        x += pulse * tone
    return np.clip(x, -1, 1).astype(np.float32)


def _write_observation(raw: Path, i: int, obs: dict, species: list[dict], world: dict, seed: int, m4a: bool) -> str:
    """Photo, satellite chip and recording of observation i; returns the sound file's suffix."""
    rng = _rng(seed, 100, i)
    sid, sp = int(obs["ids"][i]), species[obs["cls"][i]]
    ground_photo(rng, sp["colour_rgb"] if rng.random() < INFORMATIVE["ground"] else None).save(
        raw / "taxabench_images" / f"{sid}.jpg", quality=92)
    env_cell = world["env"][obs["rows"][i], obs["cols"][i]].astype(np.float32)
    angle = sp["stripe_angle_deg"] if rng.random() < INFORMATIVE["satellite"] else None
    satellite_chip(rng, env_cell, angle).save(
        raw / "sat_images" / "sentinel" / f"{sid}_{obs['lat'][i]:.6f}_{obs['lon'][i]:.6f}.jpeg", quality=92)
    sound_dir = raw / "taxabench_sound"
    if m4a:
        (sound_dir / f"{sid}.m4a").write_bytes(_M4A_BYTES + rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
        return ".m4a"
    rate = int(rng.choice([16000, 22050]))
    call = sp["call_hz"] if rng.random() < INFORMATIVE["audio"] else None
    suffix = ".wav" if rng.random() < 0.5 else ".flac"
    sf.write(sound_dir / f"{sid}{suffix}", recording(rng, call, rate), rate, subtype="PCM_16")
    return suffix


def _embeddings(seed: int, obs: dict, k: int) -> dict:
    """Class prototype x modality strength + unit noise: what frozen encoders would give, in order."""
    rng = _rng(seed, 4)
    out = {"ids": [str(int(i)) for i in obs["ids"]]}
    for m in MODALITY_STRENGTH:
        prototypes = rng.normal(size=(k, EMBED_DIM))
        noise = rng.normal(size=(len(obs["ids"]), EMBED_DIM))
        out[m] = torch.from_numpy((EMBED_SIGNAL[m] * prototypes[obs["cls"]] + noise).astype(np.float32))
    return out


def _write_csv(raw: Path, obs: dict, species: list[dict], seed: int) -> None:
    rng = _rng(seed, 5)
    with (raw / "test_df.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for i, sid in enumerate(obs["ids"]):
            sp = species[obs["cls"][i]]
            day = f"2021-{1 + rng.integers(12):02d}-{1 + rng.integers(28):02d}"
            writer.writerow([
                int(sid), day, f"{day} 10:{rng.integers(60):02d}:00 UTC", int(rng.integers(1, 99999)), f"user{rng.integers(999)}",
                "research", "CC-BY-NC", f"https://www.inaturalist.org/observations/{sid}",
                f"https://static.inaturalist.org/photos/{sid}/medium.jpg", f"https://static.inaturalist.org/sounds/{sid}.wav",
                "Synthland", f"{obs['lat'][i]:.6f}", f"{obs['lon'][i]:.6f}", int(rng.integers(3, 200)), sp["scientific_name"],
                sp["scientific_name"], sp["common_name"], "Aves", sp["taxon_id"],
            ])


def _prepare_dir(raw: Path) -> None:
    """An empty/new folder, or one holding an earlier output of this generator (replaced, nothing else touched)."""
    claim_output_dir(raw, GENERATOR_NAME, OUTPUTS)
    for sub in ("taxabench_images", "taxabench_sound", "sat_images/sentinel"):
        (raw / sub).mkdir(parents=True, exist_ok=True)


def synth_taxabench(raw_dir: Path | str, observations: int = DEFAULT_OBSERVATIONS, species: int = DEFAULT_SPECIES,
                    seed: int = DEFAULT_SEED, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the dataset into `raw_dir` and return the truth (also written to truth.json, last)."""
    raw = Path(raw_dir)
    if species < 2 or observations < max(10, species):
        raise UserError(f"need --species >= 2 and --observations >= max(10, species); got {observations} observations, {species} species")
    _prepare_dir(raw)
    world = make_world(seed)
    sp = make_species(seed, species, world)
    obs = draw_observations(seed, observations, sp, world)
    np.save(raw / "bioclim_elevation_scaled.npy", world["env"])
    _write_csv(raw, obs, sp, seed)
    suffixes, m4a = [], set(obs["m4a"].tolist())
    for i in range(observations):
        suffixes.append(_write_observation(raw, i, obs, sp, world, seed, i in m4a))
        if progress:
            progress(i + 1, observations)
    torch.save(_embeddings(seed, obs, species), raw / "embeddings.pt")
    truth = _truth(seed, world, sp, obs, suffixes)
    (raw / "truth.json").write_text(json.dumps(truth, indent=2))
    finish_output_dir(raw)
    return truth


def _truth(seed: int, world: dict, species: list[dict], obs: dict, suffixes: list[str]) -> dict:
    counts = np.bincount(obs["cls"], minlength=len(species))
    for s, c in zip(species, counts):
        s["count"] = int(c)
    ids = [str(int(i)) for i in obs["ids"]]
    return {
        "generator": GENERATOR_NAME, "seed": int(seed), "layout": "taxabench-8k",
        "observations": len(ids), "species_count": len(species), "task": "multiclass",
        "modality_strength": list(MODALITY_STRENGTH),
        "informative_fraction": INFORMATIVE,
        "embedding_signal": EMBED_SIGNAL, "embedding_dim": EMBED_DIM,
        "raster": {"file": "bioclim_elevation_scaled.npy", "shape": [*world["env"].shape], "variables": list(ENV_VARIABLES),
                   "lookup": "row = int((90 - lat) * H / 180), col = int((lon + 180) * W / 360)",
                   "land_fraction": float(world["land"].mean()), "sea": "NaN", "latents": list(LATENTS),
                   "niche_sd": NICHE_SD},
        "sea_observations": [ids[i] for i in obs["at_sea"]],
        "m4a_observations": [ids[i] for i in obs["m4a"]],
        "sound_formats": {s: suffixes.count(s) for s in sorted(set(suffixes))},
        "species": species,
        "description": (
            "Multi-class: one species per observation. Ground photos show a disc of the species' colour (95 %); "
            "recordings hold the species' call (tone + 2 harmonics at call_hz, 70 %) or noise only; the environment "
            "carries the species' niche (cells drawn by suitability over 4 latent climate fields mixed into elevation "
            "and bio1..bio19); satellite chips show faint stripes at the species' angle (50 %) over a climate-driven "
            "habitat colour; location informs only through the niches. Expected unimodal ranking: "
            + " > ".join(MODALITY_STRENGTH) + ". sea_observations have NaN environment; m4a_observations cannot be "
            "decoded by libsndfile (and are not valid audio either)."
        ),
    }
