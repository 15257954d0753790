"""GeoPlant (GeoLifeCLEF 2024 Kaggle and 2025) presence-absence surveys -> token store.

Modalities (names are part of the store contract):
- `tabular`   one token per environmental variable (bioclimatic, soil, elevation, land cover, human
              footprint CSVs), 1 feature each;
- `sentinel2` one token per band (red, green, blue, nir) x sub-patch of a `grid` x `grid` cut of the
              patch (GLC24: 128 px RGB + NIR JPEGs; GLC25: 64 px 4-band GeoTIFF);
- `landsat`   one token per year 2000..2020, features = 6 bands x 4 quarters;
- `bioclim`   one token per year 2000..2018, features = 4 variables x 12 months.
A file that is missing, unreadable or of the wrong shape marks that sample's modality missing and is
recorded as a fault; NaN marks the affected tokens missing (done by the store writer). In the tables,
a cell that is not a number is a `bad_value` fault for that survey's token (the variable is kept for
every other survey), and duplicate rows that disagree are `conflicting_rows` faults. Surveys with an
id that is not a plain name (it becomes part of file paths), coordinates outside lon [-180, 180] /
lat [-90, 90], or metadata rows that disagree on their coordinates are left out and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from miam_cli.data import readers as R
from miam_cli.data.confine import SAFE_ID, Confinement
from miam_cli.data.like import adopt_like, open_like
from miam_cli.data.split import spatial_block_split, split_from_data
from miam_cli.errors import UserError
from miam_cli.files import refuse_unfinished
from miam_cli.store.schema import PREDICT_SPLIT, ModalitySpec, TaskSpec
from miam_cli.store.writer import StorePlan

BANDS = ["red", "green", "blue", "nir"]
LANDSAT_BANDS = ["red", "green", "blue", "nir", "swir1", "swir2"]
LANDSAT_YEARS = list(range(2000, 2021))
BIOCLIM_YEARS = list(range(2000, 2019))
BIOCLIM_VARS = ["pr", "tas", "tasmin", "tasmax"]
LANDSAT_SHAPE = (6, 4, 21)
BIOCLIM_SHAPE = (4, 19, 12)
METADATA_NAMES = {
    "glc24": ["GLC24_PA_metadata_{s}.csv", "PresenceAbsenceSurveys/GLC24_PA_metadata_{s}.csv"],
    "glc25": ["GLC25_PA_metadata_{s}.csv", "PresenceAbsenceSurveys/GLC25_PA_metadata_{s}.csv"],
}
ENV_DIRS = ["EnvironmentalData", "EnvironmentalValues", "EnvironmentalValues/EnvironmentalValues"]


# ---------------------------------------------------------------- layout: where each file lives
def detect_layout(raw: Path) -> str:
    if any(raw.glob("GLC25*")) or (raw / "SatelitePatches").exists() or (raw / "SateliteTimeSeries-Landsat").exists():
        return "glc25"
    if any(raw.glob("GLC24*")) or any(raw.glob("PA_*_SatellitePatches_*")) or (raw / "TimeSeries-Cubes").exists():
        return "glc24"
    raise UserError(
        f"{raw}: no GeoPlant files found (looked for GLC24_PA_metadata_train.csv, PA_Train_SatellitePatches_RGB/, "
        "TimeSeries-Cubes/ or GLC25 SatelitePatches/); pass --layout or check the path"
    )


def short_dirs(survey_id: str) -> tuple[str, str]:
    """The GLC folder rule: CD = last two digits, AB = the two before (shorter ids give a short AB)."""
    return survey_id[-2:], survey_id[-4:-2]


@dataclass(frozen=True)
class GeoPlantFiles:
    raw: Path
    layout: str
    confine: Confinement | None = None  # every file read must resolve inside the raw folder

    def refuse_outside(self, path: Path) -> None:
        """A table outside the raw folder (a symlink out) is refused as a whole: UserError."""
        reason = self.confine.why_not(path) if self.confine else None
        if reason:
            raise UserError(reason)

    def _subset_dirs(self, subset: str) -> tuple[str, str]:
        return subset.capitalize(), subset.lower()

    def sentinel2(self, sid: str, subset: str) -> list[Path]:
        cd, ab = short_dirs(sid)
        if self.layout == "glc25":
            return [self.raw / "SatelitePatches" / f"PA-{subset}" / cd / ab / f"{sid}.tiff"]
        cap, low = self._subset_dirs(subset)
        return [
            self.raw / f"PA_{cap}_SatellitePatches_RGB" / f"pa_{low}_patches_rgb" / cd / ab / f"{sid}.jpeg",
            self.raw / f"PA_{cap}_SatellitePatches_NIR" / f"pa_{low}_patches_nir" / cd / ab / f"{sid}.jpeg",
        ]

    def cube(self, kind: str, sid: str, subset: str) -> list[Path]:
        """Candidate paths: the releases mix `landsat_time_series` and `landsat-time-series` in names."""
        stem = {"landsat": "landsat_time_series", "bioclim": "bioclimatic_monthly"}[kind]
        if self.layout == "glc25":
            folder = {"landsat": "SateliteTimeSeries-Landsat", "bioclim": "BioclimTimeSeries"}[kind]
            base = self.raw / folder / "cubes" / f"PA-{subset}"
            prefix = f"GLC25-PA-{subset}"
        else:
            base = self.raw / "TimeSeries-Cubes" / "TimeSeries-Cubes" / f"GLC24-PA-{subset}-{stem}"
            prefix = f"GLC24-PA-{subset}"
        names = {stem, stem.replace("_", "-"), stem.replace("-", "_")}
        return [base / f"{prefix}-{n}_{sid}_cube.pt" for n in sorted(names)]


# ---------------------------------------------------------------- metadata -> samples and labels
def read_metadata(raw: Path, layout: str, files: GeoPlantFiles | None = None) -> pd.DataFrame:
    """Long-format metadata of every subset, with a `subset` column; `speciesId` may be float or empty."""
    frames = []
    for subset in ("train", "test"):
        for pattern in METADATA_NAMES[layout]:
            f = raw / pattern.format(s=subset)
            if f.exists():
                if files:
                    files.refuse_outside(f)
                df = _with_columns(R.read_csv_table(f), f, ("surveyId", "lon", "lat"))
                df["subset"] = subset
                frames.append(df)
                break
    if not frames and (raw / "metadata.csv").exists():  # the single-file sample layout (malpolon fixtures)
        if files:
            files.refuse_outside(raw / "metadata.csv")
        frames.append(_with_columns(R.read_csv_table(raw / "metadata.csv"), raw / "metadata.csv", ("surveyId", "lon", "lat")))
    if not frames:
        raise UserError(f"{raw}: no metadata CSV (expected {METADATA_NAMES[layout][0].format(s='train')} or metadata.csv)")
    meta = pd.concat(frames, ignore_index=True)
    if "subset" not in meta.columns:
        meta["subset"] = "train"
    meta["surveyId"] = meta["surveyId"].map(R.id_text)
    for col in ("lon", "lat"):  # text in a coordinate is no coordinate (the survey is dropped and counted)
        meta[col] = pd.to_numeric(meta[col], errors="coerce")
    return meta


def _with_columns(table: pd.DataFrame, path: Path, columns) -> pd.DataFrame:
    """The table, if it has every column named (each file on its own: concatenated tables would fill a
    file's missing column with NaN)."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise UserError(f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(map(str, table.columns))})")
    return table


def survey_table(meta: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """One row per survey with its species list and whether it is labelled.

    A subset whose metadata has no species at all (GLC's test surveys) is unlabelled: its surveys are
    kept for the predict split. In a labelled subset, a survey without species is an empty survey.
    """
    dropped = {}
    has_species = meta["speciesId"].notna() if "speciesId" in meta.columns else pd.Series(False, index=meta.index)
    labelled_subsets = set(meta.loc[has_species, "subset"]) if "speciesId" in meta.columns else set()
    species = meta.loc[has_species, ["surveyId", "speciesId"]].copy()
    species["speciesId"] = species["speciesId"].map(R.id_text)
    by_survey = species.groupby("surveyId", sort=False)["speciesId"].agg(lambda s: sorted(set(s)))
    grouped = meta.groupby("surveyId", sort=False)
    surveys = grouped.agg(lon=("lon", "first"), lat=("lat", "first"), subset=("subset", "first")).reset_index()
    surveys["species"] = surveys["surveyId"].map(by_survey).apply(lambda v: v if isinstance(v, list) else [])
    surveys["labelled"] = surveys["subset"].isin(labelled_subsets)
    # a survey's rows (one per species) must agree on where and in which subset it is: otherwise which is right?
    conflicting = surveys["surveyId"].map(grouped[["lon", "lat", "subset"]].nunique(dropna=False).max(axis=1) > 1)
    bad_coords = surveys["lon"].isna() | surveys["lat"].isna()
    out_of_range = ~bad_coords & ~(surveys["lon"].between(-180, 180) & surveys["lat"].between(-90, 90))
    bad_id = ~surveys["surveyId"].str.match(SAFE_ID)
    for reason, mask in (("survey_with_invalid_id", bad_id), ("survey_with_conflicting_rows", conflicting & ~bad_id),
                         ("survey_without_coordinates", bad_coords & ~bad_id & ~conflicting),
                         ("survey_with_coordinates_out_of_range", out_of_range & ~bad_id & ~conflicting)):
        if mask.any():
            dropped[reason] = int(mask.sum())
    surveys = surveys[~(bad_id | conflicting | bad_coords | out_of_range)]
    surveys = surveys.sort_values("surveyId", key=lambda s: s.str.zfill(12)).reset_index(drop=True)
    return surveys, dropped


def class_table(surveys: pd.DataFrame, min_occurrences: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """Classes with at least `min_occurrences` presences in the train split, ordered by species id."""
    train = surveys[surveys["split"] == "train"]
    counts = pd.Series([s for lst in train["species"] for s in lst], dtype=object).value_counts()
    kept = sorted((s for s, c in counts.items() if c >= min_occurrences), key=lambda s: (len(s), s))
    if not kept:
        raise UserError(f"no species has >= {min_occurrences} presences in the train split; lower --min-occurrences")
    index = {s: i for i, s in enumerate(kept)}
    rows = []
    for s in kept:
        row = {"class_index": index[s], "original_id": s, "name": f"species {s}"}
        for split in ("train", "val", "test"):
            part = surveys[surveys["split"] == split]["species"]
            row[f"count_{split}"] = int(sum(s in lst for lst in part))
        rows.append(row)
    return pd.DataFrame(rows), index


# ---------------------------------------------------------------- tabular variables
@dataclass
class Environment:
    """The environmental variables of every survey: names, values [N, V] float32 (NaN where the CSV had
    no value), usable [N, V] (False for cells refused below), faults per survey row, files read."""

    names: list[str]
    values: np.ndarray
    usable: np.ndarray
    faults: dict[int, list[R.Fault]]
    files: list[str]


def read_environment(raw: Path, layout: str, survey_ids: pd.Series, files: GeoPlantFiles | None = None) -> Environment:
    """Every environmental CSV (train and test), joined on surveyId.

    A column is a variable when most of its filled cells are numbers; its other cells are `bad_value`
    faults of their survey only (one stray `abc` once dropped the variable for every survey). Rows of
    one survey that disagree on a variable make that cell a `conflicting_rows` fault; identical
    duplicates are harmless."""
    n = len(survey_ids)
    base = next((raw / d for d in ENV_DIRS if (raw / d).is_dir()), None)
    if base is None:
        return Environment([], np.zeros((n, 0), np.float32), np.zeros((n, 0), bool), {}, [])
    groups: dict[str, list[Path]] = {}
    for f in sorted(base.rglob("*.csv")):
        if files:
            files.refuse_outside(f)
        group = f.name.replace("-train-", "-*-").replace("-test-", "-*-")
        groups.setdefault(group, []).append(f)
    row_of = {sid: i for i, sid in enumerate(survey_ids)}
    columns, usable, names, used, faults = [], [], [], [], {}
    for files in groups.values():
        table = pd.concat([_with_columns(R.read_csv_table(f), f, ("surveyId",)).assign(__file=str(f)) for f in files], ignore_index=True)
        table["surveyId"] = table["surveyId"].map(R.id_text)
        for col in table.columns:
            if col in ("surveyId", "__file") or str(col).lower() in {"lon", "lat"}:
                continue
            parsed, bad = _numbers(table[col])
            if parsed is None:
                continue  # a text column (e.g. a region name), not a variable
            values, ok = _per_survey(table, parsed, bad, str(col), row_of, faults)
            names.append(str(col).lower())
            columns.append(values)
            usable.append(ok)
        used += [str(f) for f in files]
    if not columns:
        return Environment([], np.zeros((n, 0), np.float32), np.zeros((n, 0), bool), faults, used)
    return Environment(names, np.stack(columns, 1), np.stack(usable, 1), faults, used)


def _numbers(col: pd.Series) -> tuple[pd.Series | None, pd.Series]:
    """(values, cells that are neither numbers nor empty); (None, _) when most filled cells are not numbers."""
    parsed = pd.to_numeric(col, errors="coerce") if not pd.api.types.is_numeric_dtype(col) else col.astype(float)
    filled = col.notna() & (col.astype(str).str.strip() != "")
    bad = parsed.isna() & filled
    if filled.sum() and bad.sum() * 2 > filled.sum():
        return None, bad
    return parsed, bad


def _per_survey(table: pd.DataFrame, parsed: pd.Series, bad: pd.Series, col: str, row_of: dict, faults: dict):
    """One value per survey of the plan: [N] float32 (NaN: no value) and [N] bool usable; faults appended."""
    n = len(row_of)
    values, ok = np.full(n, np.nan, np.float32), np.ones(n, bool)
    rows = table["surveyId"].map(row_of)
    here = rows.notna().to_numpy()
    for r, f in zip(rows[here & bad.to_numpy()].astype(int), table["__file"][here & bad.to_numpy()]):
        faults.setdefault(r, []).append(R.Fault("bad_value", f, f"{col}: not a number"))
        ok[r] = False
    good = here & ~bad.to_numpy()
    frame = pd.DataFrame({"row": rows[good].astype(int), "value": parsed[good].to_numpy(), "file": table["__file"][good]})
    distinct = frame.groupby("row")["value"].nunique(dropna=False)
    for r in distinct.index[distinct > 1]:
        f = frame.loc[frame["row"] == r, "file"].iloc[0]
        faults.setdefault(int(r), []).append(R.Fault("conflicting_rows", f, f"{col}: rows disagree"))
        ok[r] = False
    first = frame.drop_duplicates("row")
    values[first["row"].to_numpy()] = first["value"].to_numpy(np.float32)
    values[~ok] = np.nan
    return values, ok


# ---------------------------------------------------------------- per-sample decoding (runs in workers)
ABSENT = "file listed in metadata but absent"


@dataclass(frozen=True)
class SurveyPaths:
    """Per survey, the files of one modality (`FileSource` keys), found when a chunk is decoded: a list
    of every survey's paths would travel to the workers with each chunk."""

    files: GeoPlantFiles
    modality: str
    survey_ids: list[str]
    subsets: list[str]

    def __len__(self) -> int:
        return len(self.survey_ids)

    def __getitem__(self, row: int) -> list[Path]:
        sid, subset = self.survey_ids[row], self.subsets[row]
        return self.files.sentinel2(sid, subset) if self.modality == "sentinel2" else self.files.cube(self.modality, sid, subset)


@dataclass(frozen=True)
class Sentinel2Reader:
    """A survey's patch (GLC24: an RGB and a NIR JPEG; GLC25: one 4-band GeoTIFF) -> band x sub-patch tokens.

    The patch must have the release's size: a patch of another size is a `wrong_shape` fault, never resized."""

    patch_size: int
    grid: int

    @property
    def shape(self) -> tuple[int, int]:
        return len(BANDS) * self.grid**2, (self.patch_size // self.grid) ** 2

    def __call__(self, paths: list[Path]):
        R.require_files(paths, ABSENT)
        image = R.load_bands(paths, ("RGB", "L") if len(paths) == 2 else None)
        expected = [len(BANDS), self.patch_size, self.patch_size]
        if list(image.shape) != expected:
            raise R.Fault("wrong_shape", paths[0], f"shape {list(image.shape)}, expected {expected}")
        return R.patch_tokens(image, self.grid), np.ones(self.shape[0], bool)


@dataclass(frozen=True)
class CubeReader:
    """A survey's Landsat or climate cube -> one token per year; the first of its candidate names that exists."""

    cube: R.ArrayReader

    @property
    def shape(self) -> tuple[int, int]:
        return self.cube.shape

    def __call__(self, candidates: list[Path]):
        path = next((p for p in candidates if p.exists()), candidates[0])
        R.require_files([path], ABSENT)
        try:
            return self.cube(path)
        except R.Fault:
            raise
        except Exception as e:  # the fault names the file read, which need not be the first candidate
            raise R.Fault.corrupt(path, e) from None


# the cubes' token axis: Landsat [6 bands, 4 quarters, 21 years] -> [21 years, band * 4 + quarter];
# climate [4 variables, 19 years, 12 months] -> [19 years, variable * 12 + month]
CUBES = {"landsat": R.ArrayReader(LANDSAT_SHAPE, token_axis=2), "bioclim": R.ArrayReader(BIOCLIM_SHAPE, token_axis=1)}


def survey_sources(files: GeoPlantFiles, survey_ids: list[str], subsets: list[str], env: Environment, grid: int,
                   patch_size: int) -> dict[str, R.TableSource | R.FileSource]:
    """Each modality's token source: the tables up front, the patches and cubes file by file."""
    sources = {}
    if env.names:
        sources["tabular"] = R.TableSource(np.where(env.usable, env.values, 0.0)[..., None], env.usable, env.faults)
    sources["sentinel2"] = R.FileSource(SurveyPaths(files, "sentinel2", survey_ids, subsets), Sentinel2Reader(patch_size, grid),
                                        files.confine)
    for kind, reader in CUBES.items():
        sources[kind] = R.FileSource(SurveyPaths(files, kind, survey_ids, subsets), CubeReader(reader), files.confine)
    return sources


# ---------------------------------------------------------------- the plan
@dataclass
class GeoPlantOptions:
    layout: str = "auto"
    grid: int = 4
    min_occurrences: int = 1
    split: str = "spatial"  # spatial | data
    block_size: float = 0.5
    seed: int = 0
    max_surveys: int | None = None
    allow_outside_root: bool = False  # read files that resolve outside the raw folder (symlinks out)
    like: Path | None = None  # a training store whose classes and normalisation are reused


def plan_geoplant(raw: Path, opts: GeoPlantOptions) -> tuple[StorePlan, R.SourceDecoder]:
    raw = Path(raw)
    if not raw.is_dir():
        raise UserError(f"{raw}: no such directory")
    refuse_unfinished(raw)
    layout = detect_layout(raw) if opts.layout == "auto" else opts.layout
    if layout not in METADATA_NAMES:
        raise UserError(f"--layout {opts.layout!r}: expected auto, glc24 or glc25")
    if opts.split not in ("spatial", "data"):
        raise UserError(f"--split {opts.split!r}: expected spatial or data")
    like = open_like(opts.like)
    files = GeoPlantFiles(raw, layout, Confinement.at(raw, opts.allow_outside_root))
    surveys, dropped = survey_table(read_metadata(raw, layout, files))
    if opts.max_surveys:
        surveys = surveys.iloc[: opts.max_surveys].reset_index(drop=True)
    if not surveys["labelled"].any() and like is None:
        raise UserError(f"{raw}: no labelled survey in the metadata (to prepare unlabelled surveys for prediction, "
                        "pass --like with the training store)")
    surveys["split"] = _split(surveys, opts)
    if like is None:
        classes, index = class_table(surveys, opts.min_occurrences)
    else:
        classes = like.classes
        index = {str(c): int(i) for c, i in zip(classes["original_id"], classes["class_index"])}
    env = read_environment(raw, layout, surveys["surveyId"], files)
    patch_size = 64 if layout == "glc25" else 128
    if patch_size % opts.grid:
        raise UserError(f"--grid {opts.grid}: must divide the patch size {patch_size}")
    specs = _modality_specs(env.names, opts.grid, patch_size)
    samples = pd.DataFrame({
        "sample_id": surveys["surveyId"].astype(str),
        "split": surveys["split"].astype(str),
        "lon": surveys["lon"].astype(float),
        "lat": surveys["lat"].astype(float),
        "labels": [np.array(sorted(index[s] for s in lst if s in index), dtype=np.int32) for lst in surveys["species"]],
    })
    plan = StorePlan(
        dataset="geoplant",
        task=TaskSpec(type="multilabel", num_classes=len(classes), metric="macro_auc"),
        modalities=specs,
        samples=samples,
        classes=classes,
        provenance={"raw_dir": str(raw.resolve()), "layout": layout, "environment_files": env.files, "grid": opts.grid,
                    "min_occurrences": opts.min_occurrences},
        split_info={"method": "spatial-blocks" if opts.split == "spatial" else "data+spatial-val",
                    "block_size_deg": opts.block_size, "seed": opts.seed, "fractions": [0.7, 0.15, 0.15]},
        dropped={**dropped, **({"no_environment_csv": 1} if not env.names else {})},
        normalization_scope={"tabular": "token", "sentinel2": "token", "landsat": "feature", "bioclim": "feature"},
    )
    if like is not None:
        plan = adopt_like(plan, like)
    sample_ids = samples["sample_id"].tolist()
    sources = survey_sources(files, sample_ids, surveys["subset"].astype(str).tolist(), env, opts.grid, patch_size)
    return plan, R.SourceDecoder(sample_ids, sources)


def _split(surveys: pd.DataFrame, opts: GeoPlantOptions) -> np.ndarray:
    """Labelled surveys: spatial blocks (or the metadata's train/test); unlabelled ones: the predict split."""
    labelled = surveys["labelled"].to_numpy(bool)
    split = np.full(len(surveys), PREDICT_SPLIT, dtype=object)
    part = surveys[labelled]
    if labelled.any() and opts.split == "data":
        split[labelled] = split_from_data(part["subset"], part["lon"], part["lat"], opts.block_size, seed=opts.seed)
    elif labelled.any():
        split[labelled] = spatial_block_split(part["lon"], part["lat"], opts.block_size, seed=opts.seed)
    return split.astype(str)


def _modality_specs(env_names: list[str], grid: int, patch_size: int) -> dict[str, ModalitySpec]:
    specs = {}
    if env_names:  # the sample layouts ship no environmental CSVs: then there is no tabular modality
        specs["tabular"] = ModalitySpec(kind="tabular", tokens=len(env_names), features=1, dtype="float32",
                                        axes={"variable": env_names}, description="environmental variables, one token each")
    sub = patch_size // grid
    specs["sentinel2"] = ModalitySpec(
        kind="image", tokens=4 * grid * grid, features=sub * sub, dtype="float32" if patch_size == 64 else "float16",
        axes={"band": BANDS, "patch": [f"r{r}c{c}" for r in range(grid) for c in range(grid)]}, grid=[grid, grid],
        description=f"{patch_size}x{patch_size} px patch, {grid}x{grid} sub-patches of {sub}x{sub} px per band",
    )
    specs["landsat"] = ModalitySpec(kind="timeseries", tokens=21, features=24, dtype="float32", axes={"year": LANDSAT_YEARS},
                                    description="Landsat quarterly cube; features = band (red, green, blue, nir, swir1, swir2) x quarter")
    specs["bioclim"] = ModalitySpec(kind="timeseries", tokens=19, features=48, dtype="float32", axes={"year": BIOCLIM_YEARS},
                                    description="monthly climate cube; features = variable (pr, tas, tasmin, tasmax) x month")
    return specs
