"""TaxaBench-8k observations -> token store (multi-class species identification, metric top-1).

Two routes, one store layout (modality names are part of the store contract: `ground`, `satellite`,
`audio`, `environment`, `location`):

- **raw** (default): `ground` photo and `satellite` chip -> band (red, green, blue) x sub-patch tokens
  of the centre square resized to `image_size`, cut into a `grid` x `grid` grid; `audio` -> log-mel
  time tokens (`readers.LogMelParams`; soundfile, PyAV for what libsndfile cannot read, otherwise the
  fault `unreadable_audio`); `environment` -> 20 tabular tokens (elevation, bio1..bio19) looked up in
  `bioclim_elevation_scaled.npy` (NaN, i.e. the sea, -> invalid token, not a fault); `location` -> one
  token, the multi-scale sinusoidal encoding of lon/lat.
- **embeddings** (`--embeddings FILE ...`): precomputed per-modality vectors (what the MIAM paper fed
  its TaxaBench model) -> one `embedding` token per modality.

Classes are `taxon_id`s with at least `min_per_class` observations; the split is stratified by class
(70/15/15 per class, seeded), so every split holds every class in proportion.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from miam_cli.data import readers as R
from miam_cli.data.confine import SAFE_ID, Confinement
from miam_cli.errors import UserError
from miam_cli.files import refuse_unfinished
from miam_cli.store.schema import ModalitySpec, TaskSpec
from miam_cli.store.writer import StorePlan

MODALITIES = ("ground", "satellite", "audio", "environment", "location")
ENV_VARIABLES = ["elevation"] + [f"bio{i}" for i in range(1, 20)]
RGB = ("red", "green", "blue")
SPLITS = ("train", "val", "test")
OBSERVATIONS_FILE = "test_df.csv"
RASTER_FILE = "bioclim_elevation_scaled.npy"
FOLDERS = {"ground": "taxabench_images", "audio": "taxabench_sound", "satellite": "sat_images/sentinel"}
SCOPE = {"image": "token", "audio": "feature", "tabular": "token", "location": "feature", "embedding": "feature"}


@dataclass
class TaxaBenchOptions:
    embeddings: list[str] = field(default_factory=list)  # empty: the raw route
    min_per_class: int = 1
    seed: int = 0
    grid: int = 4
    image_size: int = 64
    audio: R.LogMelParams = field(default_factory=R.LogMelParams)
    location_scales: int = 8
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    allow_outside_root: bool = False  # read files that resolve outside the raw folder (symlinks out)


# ---------------------------------------------------------------- observations, classes, split
def read_observations(raw: Path) -> tuple[pd.DataFrame, dict]:
    """The iNaturalist export: id, lon, lat, class (taxon_id, else scientific_name), name; bad rows dropped."""
    path = raw / OBSERVATIONS_FILE
    if not path.is_file():
        raise UserError(f"{raw}: no {OBSERVATIONS_FILE} (the TaxaBench-8k observation table)")
    df = R.read_csv_table(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("id", "latitude", "longitude") if c not in df.columns]
    label = "taxon_id" if "taxon_id" in df.columns else "scientific_name"
    if missing or label not in df.columns:
        raise UserError(f"{path}: missing column(s) {', '.join(missing or [label])} (columns: {', '.join(df.columns)})")
    obs = pd.DataFrame({
        "id": df["id"].map(R.id_text),
        "lon": pd.to_numeric(df["longitude"], errors="coerce"),
        "lat": pd.to_numeric(df["latitude"], errors="coerce"),
        "cls": df[label].map(R.id_text),
        "name": df["scientific_name"] if "scientific_name" in df.columns else df[label],
    })
    invalid_id = ~obs["id"].str.match(SAFE_ID)  # an id names the observation's files: never a path
    bad = ~invalid_id & (obs["lon"].isna() | obs["lat"].isna() | ~obs["lat"].between(-90, 90) | ~obs["lon"].between(-180, 180))
    unlabelled = ~invalid_id & ~bad & obs["cls"].isin(["", "nan"])
    dropped = {k: int(v.sum()) for k, v in (("observation_with_invalid_id", invalid_id), ("observation_without_coordinates", bad),
                                            ("observation_without_taxon", unlabelled)) if v.any()}
    obs = obs[~invalid_id & ~bad & ~unlabelled]
    duplicated = obs["id"].duplicated()
    if duplicated.any():
        raise UserError(f"{path}: {int(duplicated.sum())} duplicate observation id(s), e.g. {obs['id'][duplicated].iloc[0]}")
    return obs.reset_index(drop=True), dropped


def keep_frequent(obs: pd.DataFrame, min_per_class: int) -> tuple[pd.DataFrame, dict]:
    counts = obs["cls"].value_counts()
    rare = obs["cls"].map(counts) < min_per_class
    if rare.all():
        raise UserError(f"no class has >= {min_per_class} observations (largest: {counts.max()}); lower --min-per-class")
    dropped = {"rare_class_observations": int(rare.sum()), "rare_classes": int((counts < min_per_class).sum())} if rare.any() else {}
    return obs[~rare].reset_index(drop=True), dropped


def stratified_split(classes, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> np.ndarray:
    """Per class: shuffle (seeded), then the first round(0.70 n) to train, up to round(0.85 n) to val, rest test.

    Rounding the cumulative bounds keeps every split within one sample of its share in each class.
    """
    classes = np.asarray(classes)
    out = np.empty(len(classes), dtype=object)
    rng = np.random.default_rng(seed)
    bounds = np.cumsum(fractions) / np.sum(fractions)
    for c in sorted(set(classes.tolist())):
        members = rng.permutation(np.flatnonzero(classes == c))
        cuts = np.round(bounds * len(members)).astype(int)
        for split, lo, hi in zip(SPLITS, np.concatenate([[0], cuts[:-1]]), cuts):
            out[members[lo:hi]] = split
    return out.astype(str)


def class_table(obs: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Classes ordered by numeric id when ids are numbers, with the observation count per split."""
    ids = sorted(obs["cls"].unique(), key=lambda s: (len(s), s) if s.isdigit() else (1 << 30, s))
    index = {c: i for i, c in enumerate(ids)}
    names = obs.groupby("cls")["name"].first()
    counts = obs.groupby(["cls", "split"]).size()
    rows = [{"class_index": index[c], "original_id": c, "name": str(names[c]),
             **{f"count_{s}": int(counts.get((c, s), 0)) for s in SPLITS}} for c in ids]
    return pd.DataFrame(rows), index


# ---------------------------------------------------------------- the raw route
def file_index(folder: Path) -> dict[str, Path]:
    """Observation id -> file: the name up to its first `_` or `.` (`<id>.jpg`, `<id>_<lat>_<lon>.jpeg`)."""
    if not folder.is_dir():
        return {}
    out = {}
    for entry in os.scandir(folder):
        if entry.is_file():
            out.setdefault(entry.name.split(".")[0].split("_")[0], Path(entry.path))
    return out


def _file_keys(raw: Path, modality: str, ids: list[str], default_suffix: str) -> list[str]:
    """Each observation's file; an absent one gets its nominal path, so the reader reports it missing."""
    folder = raw / FOLDERS[modality]
    found = file_index(folder)
    return [str(found.get(i, folder / f"{i}{default_suffix}")) for i in ids]


def raw_sources(raw: Path, obs: pd.DataFrame, opts: TaxaBenchOptions):
    """(modality specs, sources) for every modality whose folder or file exists; the others are left out."""
    ids, specs, sources = obs["id"].tolist(), {}, {}
    confine = Confinement.at(raw, opts.allow_outside_root)
    image = R.ImageReader(RGB, opts.image_size, opts.grid, mode="RGB")  # grayscale photos still give 3 bands
    for m, suffix in (("ground", ".jpg"), ("satellite", ".jpeg")):
        if (raw / FOLDERS[m]).is_dir():
            specs[m] = _image_spec(image, m)
            sources[m] = R.FileSource(_file_keys(raw, m, ids, suffix), image, confine)
    if (raw / FOLDERS["audio"]).is_dir():
        audio = R.AudioReader(opts.audio)
        specs["audio"] = ModalitySpec(kind="audio", tokens=opts.audio.tokens, features=opts.audio.n_mels, dtype="float32",
                                      axes={"time": opts.audio.time_axis()},
                                      description=f"log-mel ({opts.audio.n_mels} mels) of the first {opts.audio.seconds:g} s, "
                                                  f"{opts.audio.tokens} time segments")
        sources["audio"] = R.FileSource(_file_keys(raw, "audio", ids, ".wav"), audio, confine)
    if (raw / RASTER_FILE).is_file():
        if confine.why_not(raw / RASTER_FILE):
            raise UserError(confine.why_not(raw / RASTER_FILE))
        specs["environment"] = ModalitySpec(kind="tabular", tokens=len(ENV_VARIABLES), features=1, dtype="float32",
                                            axes={"variable": ENV_VARIABLES},
                                            description="elevation and bio1..bio19 (z-scored) at the observation's cell")
        sources["environment"] = environment_source(raw / RASTER_FILE, obs["lon"].to_numpy(), obs["lat"].to_numpy())
    specs["location"] = ModalitySpec(kind="location", tokens=1, features=4 * opts.location_scales, dtype="float32",
                                     axes={"position": ["lonlat"]},
                                     description=f"sin/cos of 2^k lon, 2^k lat (radians), k < {opts.location_scales}")
    enc = R.location_encoding(obs["lon"].to_numpy(), obs["lat"].to_numpy(), opts.location_scales)
    sources["location"] = R.TableSource(enc[:, None, :], np.ones((len(obs), 1), bool))
    return specs, sources


def _image_spec(reader: R.ImageReader, modality: str) -> ModalitySpec:
    what = "ground-level photo" if modality == "ground" else "Sentinel-2 RGB chip"
    return ModalitySpec(kind="image", tokens=reader.shape[0], features=reader.shape[1], dtype="float16",
                        axes={"band": list(RGB), "patch": R.grid_names(reader.grid)}, grid=[reader.grid, reader.grid],
                        description=f"{what}: centre square resized to {reader.size} px, {reader.grid}x{reader.grid} sub-patches per band")


def environment_source(path: Path, lon: np.ndarray, lat: np.ndarray) -> R.TableSource:
    """The 20 variables of each observation's cell; NaN (the sea) is an invalid token, not a fault."""
    try:
        raster = np.load(path, mmap_mode="r")  # the real file is ~370 MB: read only the cells we need
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: cannot read the environmental raster: {e}") from None
    if raster.ndim != 3 or raster.shape[2] != len(ENV_VARIABLES):
        raise UserError(f"{path}: shape {list(raster.shape)}, expected [H, W, {len(ENV_VARIABLES)}] (elevation, bio1..bio19)")
    values = R.grid_lookup(raster, lon, lat)
    valid = np.isfinite(values)
    return R.TableSource(np.where(valid, values, 0.0)[..., None], valid)


# ---------------------------------------------------------------- the embeddings route
def embedding_sources(files: list[str], ids: list[str]):
    specs, sources, origin = {}, {}, {}
    for f in files:
        table = R.read_embeddings(f)
        for m, vectors in table.vectors.items():
            if m in origin:
                raise UserError(f"--embeddings: modality {m!r} is in both {origin[m]} and {table.file}")
            origin[m] = table.file
            specs[m] = ModalitySpec(kind="embedding", tokens=1, features=vectors.shape[1], dtype="float32",
                                    axes={"embedding": [m]}, description=f"precomputed {m} embedding from {Path(table.file).name}")
            sources[m] = R.embedding_source(table, m, ids)
    known = [m for m in MODALITIES if m in specs] + sorted(set(specs) - set(MODALITIES))
    return {m: specs[m] for m in known}, {m: sources[m] for m in known}


# ---------------------------------------------------------------- the plan
def plan_taxabench(raw: Path, opts: TaxaBenchOptions) -> tuple[StorePlan, R.SourceDecoder]:
    raw = Path(raw)
    if not raw.is_dir():
        raise UserError(f"{raw}: no such directory")
    refuse_unfinished(raw)
    if opts.min_per_class < 1:
        raise UserError(f"--min-per-class {opts.min_per_class}: must be >= 1")
    reason = Confinement.at(raw, opts.allow_outside_root).why_not(raw / OBSERVATIONS_FILE)
    if reason:
        raise UserError(reason)
    obs, dropped = read_observations(raw)
    obs, rare = keep_frequent(obs, opts.min_per_class)
    obs["split"] = stratified_split(obs["cls"].to_numpy(), opts.fractions, opts.seed)
    classes, index = class_table(obs)
    ids = obs["id"].tolist()
    if opts.embeddings:
        specs, sources = embedding_sources(opts.embeddings, ids)
    else:
        specs, sources = raw_sources(raw, obs, opts)
    samples = pd.DataFrame({
        "sample_id": ids, "split": obs["split"], "lon": obs["lon"].astype(float), "lat": obs["lat"].astype(float),
        "labels": [np.array([index[c]], dtype=np.int32) for c in obs["cls"]],
    })
    route = "embeddings" if opts.embeddings else "raw"
    provenance = {"raw_dir": str(raw.resolve()), "route": route, "min_per_class": opts.min_per_class,
                  "absent_modalities": [m for m in MODALITIES if m not in specs] if route == "raw" else []}
    if route == "raw":
        provenance.update(grid=opts.grid, image_size=opts.image_size, log_mel=vars(opts.audio), location_scales=opts.location_scales)
    else:
        provenance["embeddings"] = [str(f) for f in opts.embeddings]
    plan = StorePlan(
        dataset="taxabench", task=TaskSpec(type="multiclass", num_classes=len(classes), metric="top1"),
        modalities=specs, samples=samples, classes=classes, provenance=provenance,
        split_info={"method": "stratified-by-class", "seed": opts.seed, "fractions": list(opts.fractions)},
        dropped={**dropped, **rare}, normalization_scope={m: SCOPE[s.kind] for m, s in specs.items()},
    )
    return plan, R.SourceDecoder(ids, sources)
