"""`miam prepare custom SPEC.yaml STORE`: a user's own data, described by a dataset spec, built into a store plan.

The spec's models are in `miam_cli.data.dataset_spec`; here each part is built against the data:
the points (coordinates in their CRS, labels, classes, the split) and every modality, on the shared
readers in `miam_cli.data.readers`. Every problem found against the data (columns, files,
patterns) is reported at once with its key path (exit 2). Every file is read only if it resolves
(symlinks included) inside the spec's folder, or its `root` (itself inside that folder), unless
the spec says `allow_outside_root: true` (`miam_cli.data.confine`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from miam_cli.data import coords as C
from miam_cli.data import readers as R
from miam_cli.data.confine import Confinement
from miam_cli.data.dataset_spec import (
    ColumnsModality,
    CubeModality,
    DatasetSpec,
    EmbeddingsModality,
    FilesModality,
    LabelSpec,
    LocationModality,
    Modality,
    PointsSpec,
    RasterPatchesModality,
    RasterValuesModality,
    SplitSpec,
    TimeseriesCsvModality,
    fill_pattern,
    spec_root,
)
from miam_cli.data.dataset_spec import format_spec_errors, load_spec, load_yaml_model  # noqa: F401 (callers import them from here)
from miam_cli.data.split import assign_blocks, block_of_points
from miam_cli.errors import UserError
from miam_cli.files import refuse_unfinished
from miam_cli.store.schema import PREDICT_SPLIT, ModalitySpec, TaskSpec
from miam_cli.store.writer import StorePlan

SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test",
               "predict": PREDICT_SPLIT}
TRUE_WORDS, FALSE_WORDS = {"1", "true", "yes"}, {"0", "false", "no"}


# ================================================================ building: points, labels, split
class SpecErrors(Exception):
    """Spec problems found against the data, each line with its key path; reported all at once."""

    def __init__(self, lines: list[str]):
        super().__init__("\n  ".join(lines))
        self.lines = lines


class SpecError(SpecErrors):
    def __init__(self, where: str, message: str):
        super().__init__([f"{where}: {message}"])


@dataclass
class Context:
    """What every modality builder needs: resolved paths, and the kept points in store order."""

    root: Path
    table_name: str
    points: pd.DataFrame  # kept points, index 0..N-1
    id_column: str
    crs: object = None  # the points' CRS (pyproj), None for WGS84 lon/lat
    warnings: list[str] | None = None
    confine: Confinement | None = None  # where files may be read (None: anywhere)

    @property
    def ids(self) -> list[str]:
        return self.points[self.id_column].map(R.id_text).tolist()

    @property
    def lon(self) -> np.ndarray:
        return self.points["__lon"].to_numpy(float)

    @property
    def lat(self) -> np.ndarray:
        return self.points["__lat"].to_numpy(float)

    @property
    def xy(self) -> tuple[np.ndarray, np.ndarray, str]:
        """The points as given (x, y) and their CRS: what rasters are sampled from, each raster
        transforming them straight into its own CRS."""
        if self.crs is None:
            return self.lon, self.lat, C.WGS84
        return self.points["__x"].to_numpy(float), self.points["__y"].to_numpy(float), self.crs.to_wkt()

    def file(self, rel: str, where: str, folder: bool = False) -> Path:
        path = Path(rel) if Path(rel).is_absolute() else self.root / rel
        reason = self.confine.why_not(path) if self.confine else None
        if reason:
            raise SpecError(where, reason)
        if not (path.exists() if folder else path.is_file()):
            raise SpecError(where, f"no such file {path}")
        return path

    def column(self, name: str, where: str) -> pd.Series:
        if name not in self.points.columns:
            raise SpecError(where, f"column {name!r} not in {self.table_name} (columns: {', '.join(map(str, _user_columns(self.points)))})")
        return self.points[name]

    def keys(self, m: str, spec: Modality) -> list[str]:
        return self.column(spec.key or self.id_column, f"modalities.{m}.key").map(R.id_text).tolist()

    @classmethod
    def at(cls, root: Path, lon: np.ndarray, lat: np.ndarray, name: str, confine: Confinement | None = None) -> "Context":
        """Bare locations (a map's pixel centres): what location-computable modalities need, and nothing else."""
        points = pd.DataFrame({"id": [str(i) for i in range(len(lon))], "__lon": np.asarray(lon, float), "__lat": np.asarray(lat, float)})
        return cls(root, name, points, "id", confine=confine)


def _user_columns(df: pd.DataFrame) -> list:
    return [c for c in df.columns if not str(c).startswith("__")]


def read_table(path: Path, sep: str | None) -> pd.DataFrame:
    """A points table; unreadable is a UserError naming the file (never quoting it)."""
    if path.suffix.lower() not in (".parquet", ".pq"):
        return R.read_csv_table(path, sep=sep, engine="python" if sep is None else "c")
    try:
        return pd.read_parquet(path)
    except Exception as e:
        raise UserError(f"{path}: cannot read the table ({type(e).__name__})") from None


def build_points(spec: DatasetSpec, root: Path, classes: list[str] | None = None,
                 confine: Confinement | None = None) -> tuple[Context, list[np.ndarray], pd.DataFrame, str, dict]:
    """Points kept (coordinates and a label present, classes frequent enough), labels, class table, task, dropped.

    Points without a label (an empty label cell) are kept in the predict split unless `points.unlabelled: drop`
    (`ctx.points["__unlabelled"]` marks them). `classes` fixes the class list (`--like STORE`) instead of
    taking the classes seen in the points.
    """
    p = spec.points
    path = Context(root, "", pd.DataFrame(), p.id, confine=confine).file(p.path, "points.path")
    table = read_table(path, p.sep)
    ctx = Context(root, path.name, table, p.id, C.parse_crs(p.crs) if p.crs is not None else None, [], confine)
    errors = []
    for key, column in (("id", p.id), *p.coordinate_keys):
        try:
            ctx.column(column, f"points.{key}")
        except SpecError as e:
            errors += e.lines
    if errors:
        raise SpecErrors(errors)
    located = _locate(table, p, ctx.crs)
    dropped = {"point_without_coordinates": int((~located).sum())} if not located.all() else {}
    ctx.points = table[located].reset_index(drop=True)
    ids = pd.Series(ctx.ids)
    if ids.duplicated().any():
        raise SpecError("points.id", f"{int(ids.duplicated().sum())} duplicate id(s) in {path.name}, the first in data row "
                                     f"{int(np.flatnonzero(ids.duplicated())[0]) + 1} of the kept points; "
                                     "one row per point (list several species in a `species` column)")
    lists, task = _label_lists(ctx, p.labels)
    unlabelled = np.array([lst is None for lst in lists], dtype=bool)
    if unlabelled.any() and p.unlabelled == "drop":
        dropped["point_without_labels"] = int(unlabelled.sum())
    ctx.points["__unlabelled"] = unlabelled
    lists = [lst or [] for lst in lists]
    counts = pd.Series([c for lst in lists for c in lst], dtype=object).value_counts()
    kept = classes if classes is not None else sorted(
        (c for c, n in counts.items() if n >= p.labels.min_count), key=lambda s: (len(s), s) if s.isdigit() else (1 << 30, s))
    if not kept:
        raise SpecError("points.labels", f"no class has >= {p.labels.min_count} points")
    index = {c: i for i, c in enumerate(kept)}
    lists = [[c for c in lst if c in index] for lst in lists]
    has = ~unlabelled if p.unlabelled == "drop" else np.ones(len(lists), bool)
    if task == "multiclass":  # a labelled point whose class was dropped has no label left: drop the point
        lost = np.array([len(lst) != 1 for lst in lists]) & ~unlabelled
        if lost.any():
            dropped["point_without_kept_class"] = int(lost.sum())
        has &= ~lost
    if not has.all():
        ctx.points = ctx.points[has].reset_index(drop=True)
        lists = [lst for lst, h in zip(lists, has) if h]
    labels = [np.array(sorted(index[c] for c in lst), dtype=np.int32) for lst in lists]
    classes = pd.DataFrame({"class_index": range(len(kept)), "original_id": kept, "name": kept})
    return ctx, labels, classes, task, dropped


def _locate(table: pd.DataFrame, p: PointsSpec, crs) -> pd.Series:
    """Fill __lon/__lat (WGS84) and, with a CRS, __x/__y (as given); which points have coordinates.

    Without a CRS, coordinates that are mostly out of lon/lat range are metres given as degrees:
    refused, rather than every point dropped.
    """
    (_, xcol), (_, ycol) = p.coordinate_keys
    x, y = pd.to_numeric(table[xcol], errors="coerce").to_numpy(float), pd.to_numeric(table[ycol], errors="coerce").to_numpy(float)
    if crs is None:
        numeric = np.isfinite(x) & np.isfinite(y)
        outside = numeric & ~((np.abs(x) <= 180) & (np.abs(y) <= 90))
        if outside.sum() > numeric.sum() / 2:
            raise SpecError("points.lon/lat", f"{int(outside.sum())} of {int(numeric.sum())} points have coordinates outside "
                                              f"-180..180 / -90..90: set points.crs? (e.g. crs: 32631 with x: {xcol}, y: {ycol})")
        lon, lat = x, y
    else:
        table["__x"], table["__y"] = x, y
        lon, lat = C.to_lonlat(x, y, crs)
    table["__lon"], table["__lat"] = lon, lat
    return pd.Series((np.abs(lon) <= 180) & (np.abs(lat) <= 90), index=table.index)  # NaN and inf compare False


def _label_lists(ctx: Context, labels: LabelSpec) -> tuple[list[list[str] | None], str]:
    """Each point's classes, and the task type; None where the label cell is empty (an unlabelled point, not an absence)."""
    if labels.binary is not None:
        return _binary_lists(ctx.column(labels.binary, "points.labels.binary"), labels.binary), "multilabel"
    if labels.class_ is not None:
        col = ctx.column(labels.class_, "points.labels.class")
        if _is_binary(col):
            ctx.warnings.append(f"points.labels.class: column {labels.class_!r} holds only 0/1: this builds a 2-class multiclass task "
                                f"judged on top-1 accuracy; for presence/background data use `labels: {{binary: {labels.class_}}}` "
                                "(one class, AUC / AUPRC / TSS)")
        return [None if pd.isna(v) or str(v).strip() == "" else [R.id_text(v)] for v in col], "multiclass"
    if labels.species is not None:
        col = ctx.column(labels.species, "points.labels.species")
        split = re.compile(re.escape(labels.separator) if labels.separator else r"[,;\s]+")
        return [_species_list(v, split) for v in col], "multilabel"
    names = labels.presence if isinstance(labels.presence, list) else [c for c in ctx.points.columns if re.search(labels.presence, str(c))]
    if not names:
        raise SpecError("points.labels.presence", f"no column matches {labels.presence!r}")
    numbers = np.stack([pd.to_numeric(ctx.column(c, "points.labels.presence"), errors="coerce").to_numpy(float) for c in names], 1)
    present = np.nan_to_num(numbers) > 0
    return [None if np.isnan(num).all() else [str(names[j]) for j in np.flatnonzero(row)] for row, num in zip(present, numbers)], "multilabel"


def _binary_words(col: pd.Series) -> pd.Series:
    """0/1 (also 0.0/1.0) and true/false/yes/no as lower-case text; empty cells as ''."""
    return col.map(lambda v: "" if pd.isna(v) else R.id_text(v).strip().lower())


def _is_binary(col: pd.Series) -> bool:
    words = set(_binary_words(col)) - {""}
    return bool(words) and words <= TRUE_WORDS | FALSE_WORDS


def _binary_lists(col: pd.Series, name: str) -> list[list[str] | None]:
    words = _binary_words(col)
    bad = sorted(set(words) - TRUE_WORDS - FALSE_WORDS - {""})
    if bad:
        raise SpecError("points.labels.binary", f"column {name!r} holds {bad[:5]}; expected 0/1 or true/false")
    if not words.isin(TRUE_WORDS).any():
        raise SpecError("points.labels.binary", f"column {name!r} has no presence (no 1 or true)")
    return [None if w == "" else [name] if w in TRUE_WORDS else [] for w in words]


def _species_list(value, split: re.Pattern) -> list[str] | None:
    """The species of one cell; [] for an empty list (a survey where nothing was found), None for an empty cell."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return sorted({R.id_text(v) for v in value})
    if value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip():
        return None
    text = str(value).strip().strip("[]()")
    return sorted({R.id_text(t.strip("'\" ")) for t in split.split(text) if t.strip("'\" ")})


def split_points(ctx: Context, split: SplitSpec, labels: list[np.ndarray], num_classes: int) -> tuple[np.ndarray, dict]:
    """Labelled points split by `build_split`; unlabelled ones go to the predict split (and count for no quota)."""
    unlabelled = ctx.points["__unlabelled"].to_numpy(bool)
    if not unlabelled.any():
        return build_split(ctx, split, labels, num_classes)
    out = np.full(len(unlabelled), PREDICT_SPLIT, dtype=object)
    info = {}
    if (~unlabelled).any():
        labelled = [lab for lab, u in zip(labels, unlabelled) if not u]
        out[~unlabelled], info = build_split(replace(ctx, points=ctx.points[~unlabelled].reset_index(drop=True)), split, labelled, num_classes)
    return out.astype(str), {**info, PREDICT_SPLIT: int(unlabelled.sum())}


def build_split(ctx: Context, split: SplitSpec, labels: list[np.ndarray], num_classes: int) -> tuple[np.ndarray, dict]:
    if split.column is None:
        size = C.parse_block_size(split.block_size)
        width, height, units = size.cell(ctx.lat, ctx.crs)
        x, y = (ctx.xy[:2] if units.startswith("metres") else (ctx.lon, ctx.lat))
        block = block_of_points(x, y, width, height)
        aware = split.balance == "labels"
        info = {"method": "spatial-blocks", "block_size": str(size), "block_units": units, "blocks": int(block.max() + 1) if len(block) else 0,
                "balance": split.balance, "seed": split.seed, "fractions": list(split.fractions)}
        if not size.metres:
            info["block_size_deg"] = size.value
        return assign_blocks(block, split.fractions, split.seed, labels if aware else None, num_classes), info
    words = ctx.column(split.column, "points.split.column").astype(str).str.strip().str.lower()
    bad = ~words.isin(list(SPLIT_WORDS))
    if bad.any():  # counted and located, never quoted (a cell can hold anything)
        raise SpecError("points.split.column", f"{int(bad.sum())} value(s) are not train/val/test/predict "
                                               f"(the first in data row {int(np.flatnonzero(bad.to_numpy())[0]) + 1} of the kept points)")
    return words.map(SPLIT_WORDS).to_numpy().astype(str), {"method": "column", "column": split.column}


# ================================================================ building: modalities
@dataclass
class Built:
    spec: ModalitySpec
    source: R.TableSource | R.FileSource
    scope: str  # normalisation scope


def build_columns(m: str, s: ColumnsModality, ctx: Context) -> Built:
    names = s.columns if s.columns is not None else [c for c in _user_columns(ctx.points) if re.search(s.match, str(c))]
    if not names:
        raise SpecError(f"modalities.{m}.match", f"no column of {ctx.table_name} matches {s.match!r}")
    values = np.stack([_numeric(ctx.column(c, f"modalities.{m}.columns"), f"modalities.{m}.columns", c) for c in names], 1)
    valid = np.isfinite(values)  # an empty cell is a missing value, not a fault
    spec = ModalitySpec(kind="tabular", tokens=len(names), features=1, axes={"variable": [str(c) for c in names]},
                        description=s.description or f"columns of {ctx.table_name}")
    return Built(spec, R.TableSource(np.where(valid, values, 0.0)[..., None], valid), "token")


def _numeric(col: pd.Series, where: str, name: str) -> np.ndarray:
    values = pd.to_numeric(col, errors="coerce")
    if values.isna().sum() > col.isna().sum():
        row = int(np.flatnonzero((values.isna() & col.notna()).to_numpy())[0]) + 1
        raise SpecError(where, f"column {name!r} is not numeric (data row {row} of the kept points is not a number)")
    return values.to_numpy(float)


def build_raster_values(m: str, s: RasterValuesModality, ctx: Context) -> Built:
    files = s.files if isinstance(s.files, dict) else {Path(f).stem: f for f in s.files}
    names, columns, valids = [], [], []
    for name, rel in files.items():
        path = ctx.file(rel, f"modalities.{m}.files.{name}" if isinstance(s.files, dict) else f"modalities.{m}.files")
        try:
            values, valid = R.raster_points(path, *ctx.xy)
        except Exception as e:
            raise SpecError(f"modalities.{m}.files", f"{path}: cannot read the raster: {e}") from None
        names += [name] if values.shape[1] == 1 else [f"{name}_b{b + 1}" for b in range(values.shape[1])]
        columns.append(values)
        valids.append(valid)
    spec = ModalitySpec(kind="tabular", tokens=len(names), features=1, axes={"variable": names},
                        description=s.description or "raster values at the points")
    return Built(spec, R.TableSource(np.concatenate(columns, 1)[..., None], np.concatenate(valids, 1)), "token")


def build_raster_patches(m: str, s: RasterPatchesModality, ctx: Context) -> Built:
    path = ctx.file(s.file, f"modalities.{m}.file")
    try:
        rows, cols, count, names = R.raster_pixels(path, *ctx.xy)
    except Exception as e:
        raise SpecError(f"modalities.{m}.file", f"{path}: cannot read the raster: {e}") from None
    bands = s.bands or names
    if len(bands) != count:
        raise SpecError(f"modalities.{m}.bands", f"{len(bands)} name(s) for a raster of {count} band(s)")
    if s.size % s.grid:
        raise SpecError(f"modalities.{m}.grid", f"{s.grid} must divide size {s.size}")
    reader = R.RasterWindowReader(str(path), tuple(bands), s.size, s.grid)
    spec = _patch_spec(bands, s.grid, reader.shape, s.description or f"{s.size}x{s.size} px windows of {path.name}")
    return Built(spec, R.FileSource(list(zip(rows.tolist(), cols.tolist())), reader), "token")


def _patch_spec(bands, grid: int, shape, description: str) -> ModalitySpec:
    return ModalitySpec(kind="image", tokens=shape[0], features=shape[1], dtype="float32",
                        axes={"band": list(bands), "patch": R.grid_names(grid)}, grid=[grid, grid], description=description)


def build_files(m: str, s: FilesModality, ctx: Context) -> Built:
    where = f"modalities.{m}.pattern"
    patterns = [p if Path(p).is_absolute() else str(ctx.root / p) for p in s.patterns]
    if ctx.confine:  # the fixed part of a pattern must lie inside the root (the ids are checked per file)
        for p in patterns:
            reason = ctx.confine.why_not(Path(fill_pattern(p, "x")).parent)
            if reason:
                raise SpecError(where, reason)
    keys = [tuple(fill_pattern(p, k) for p in patterns) for k in ctx.keys(m, s)]
    readable = (k for k in keys if all(Path(p).is_file() and (ctx.confine is None or ctx.confine.inside(p)) for p in k))
    first = next(readable, None)
    if first is None:
        raise SpecError(where, f"no file found for any of the {len(keys)} points (first expected: {keys[0][0] if keys else patterns[0]})")
    fmt = s.format if s.format != "auto" else _format_of(first[0], where)
    if fmt != "image" and len(patterns) > 1:
        raise SpecError(where, f"several patterns stack image bands; a {fmt} modality takes one")
    try:
        built = {"image": _image_files, "array": _array_files, "audio": _audio_files}[fmt](m, s, keys, first)
    except (SpecErrors, UserError):
        raise
    except Exception as e:  # the first file decides the shape: a damaged one (a 0-byte .npy) cannot
        raise SpecError(where, f"{first[0]}: cannot read the first point's file, which sets the modality's shape "
                               f"({type(e).__name__}); fix or remove it") from None
    built.source.confine = ctx.confine
    return built


def _format_of(path: str, where: str) -> str:
    suffix = Path(path).suffix.lower()
    for fmt, suffixes in (("image", R.IMAGE_SUFFIXES), ("array", R.ARRAY_SUFFIXES), ("audio", R.AUDIO_SUFFIXES)):
        if suffix in suffixes:
            return fmt
    raise SpecError(where, f"cannot tell the format of {suffix!r} files; set format: image, array or audio")


def _image_files(m: str, s: FilesModality, keys: list, first: tuple) -> Built:
    image = R.load_bands([Path(p) for p in first])
    default = ["red", "green", "blue", "nir"][: image.shape[0]] if image.shape[0] in (3, 4) else [f"b{i + 1}" for i in range(image.shape[0])]
    bands = s.bands or default
    if len(bands) != image.shape[0]:
        raise SpecError(f"modalities.{m}.bands", f"{len(bands)} name(s), but the files of a point hold {image.shape[0]} band(s) ({first[0]})")
    size = s.size or min(image.shape[1:])
    if size % s.grid:
        raise SpecError(f"modalities.{m}.grid", f"{s.grid} must divide the image size {size}")
    reader = R.ImageReader(tuple(bands), size, s.grid)
    return Built(_patch_spec(bands, s.grid, reader.shape, s.description or f"{size} px images, {s.grid}x{s.grid} sub-patches per band"),
                 R.FileSource(keys, reader), "token")


def _array_files(m: str, s: FilesModality, keys: list, first: tuple) -> Built:
    shape = R.load_array(Path(first[0])).shape
    if not -len(shape) <= s.token_axis < len(shape):
        raise SpecError(f"modalities.{m}.token_axis", f"{s.token_axis} is not an axis of arrays of shape {list(shape)}")
    reader = R.ArrayReader(tuple(shape), s.token_axis % len(shape))
    values = s.axis_values or list(range(reader.shape[0]))
    if len(values) != reader.shape[0]:
        raise SpecError(f"modalities.{m}.axis_values", f"{len(values)} value(s) for {reader.shape[0]} tokens")
    spec = ModalitySpec(kind="timeseries", tokens=reader.shape[0], features=reader.shape[1], axes={s.axis: values},
                        description=s.description or f"arrays of shape {list(shape)}, tokens along axis {s.token_axis}")
    return Built(spec, R.FileSource([k[0] for k in keys], reader), "feature")


def _audio_files(m: str, s: FilesModality, keys: list, first: tuple) -> Built:
    params = s.audio.params()
    spec = ModalitySpec(kind="audio", tokens=params.tokens, features=params.n_mels, axes={"time": params.time_axis()},
                        description=s.description or f"log-mel of the first {params.seconds:g} s")
    return Built(spec, R.FileSource([k[0] for k in keys], R.AudioReader(params)), "feature")


def build_timeseries_csv(m: str, s: TimeseriesCsvModality, ctx: Context) -> Built:
    files = s.files if isinstance(s.files, dict) else {"value": s.files}
    paths = {name: ctx.file(rel, f"modalities.{m}.files" + (f".{name}" if isinstance(s.files, dict) else "")) for name, rel in files.items()}
    tables = {name: _series_table(path, s, f"modalities.{m}.files") for name, path in paths.items()}
    columns = list(next(iter(tables.values())).columns)
    for name, t in tables.items():
        if list(t.columns) != columns:
            raise SpecError(f"modalities.{m}.files.{name}", "its time columns differ from the other files'")
    tokens, steps, placement = _series_layout(columns, s.group, f"modalities.{m}.group")
    used = [c for c, _, _ in placement]
    keys = ctx.keys(m, s)
    markers = {x.strip().lower() for x in s.missing}
    values = np.full((len(keys), len(tokens), len(files) * len(steps)), np.nan, np.float32)
    faults: dict[int, list[R.Fault]] = {}
    for f, (name, table) in enumerate(tables.items()):
        absent = ~pd.Index(keys).isin(table.index)
        text = table.reindex(keys)[used].fillna("").apply(lambda col: col.str.strip())
        marked = text.apply(lambda col: col.str.lower().isin(markers)).to_numpy()  # before parsing: -9999 may be a marker
        numbers = np.where(marked, np.nan, text.apply(lambda col: pd.to_numeric(col, errors="coerce")).to_numpy(np.float32))
        unparsable = np.isnan(numbers) & ~marked
        for r in np.flatnonzero(absent):
            faults.setdefault(r, [R.Fault("missing_row", paths[name], f"no row for {keys[r]} in {paths[name].name}")])
        for r in np.flatnonzero(unparsable.any(axis=1) & ~absent):
            faults.setdefault(r, [R.Fault("bad_value", paths[name], f"{int(unparsable[r].sum())} value(s) neither numbers nor missing markers")])
        for c, (_, t, st) in enumerate(placement):
            values[:, t, f * len(steps) + st] = numbers[:, c]
    valid = np.isfinite(values).all(axis=2)  # a missing marker (e.g. eos) in any feature: the token has no data
    features = [name if len(steps) == 1 else f"{name}:{step}" for name in files for step in steps]
    spec = ModalitySpec(kind="timeseries", tokens=len(tokens), features=len(features), axes={s.axis: tokens},
                        description=s.description or f"features {', '.join(features[:8])}{' ...' if len(features) > 8 else ''}")
    return Built(spec, R.TableSource(np.where(valid[..., None], values, 0.0), valid, faults), "feature")


def _series_table(path: Path, s: TimeseriesCsvModality, where: str) -> pd.DataFrame:
    table = R.read_csv_table(path, sep=s.sep, engine="python" if s.sep is None else "c", dtype=str, keep_default_na=False)
    id_col = s.id_column or table.columns[0]
    if id_col not in table.columns:
        raise SpecError(where, f"{path.name} has no id column {id_col!r} (columns: {', '.join(table.columns[:10])} ...)")
    table[id_col] = table[id_col].map(R.id_text)
    if table[id_col].duplicated().any():
        row = int(np.flatnonzero(table[id_col].duplicated().to_numpy())[0]) + 1
        raise SpecError(where, f"{path.name}: duplicate id in data row {row}; one row per id")
    return table.set_index(id_col)


def _series_layout(columns: list[str], group: str | None, where: str):
    """(token names, step names, [(column, token index, step index)]): one token per column, or grouped by a regex.

    With `group`, columns the regex does not match are left out (e.g. extra metadata columns).
    """
    if group is None:
        return [_int_or_str(c) for c in columns], [None], [(c, i, 0) for i, c in enumerate(columns)]
    try:
        rx = re.compile(group)
    except re.error as e:
        raise SpecError(where, f"not a valid regex: {e}") from None
    if not {"token", "step"} <= set(rx.groupindex):
        raise SpecError(where, "the regex needs named groups (?P<token>...) and (?P<step>...)")
    matched = [(c, mt) for c in columns if (mt := rx.fullmatch(c))]
    if not matched:
        raise SpecError(where, f"matches none of the columns ({', '.join(columns[:5])} ...)")
    tokens = list(dict.fromkeys(mt["token"] for _, mt in matched))
    steps = list(dict.fromkeys(mt["step"] for _, mt in matched))
    if len(matched) != len(tokens) * len(steps):
        raise SpecError(where, f"the matched columns do not form a full {len(tokens)} x {len(steps)} grid of tokens x steps")
    placement = [(c, tokens.index(mt["token"]), steps.index(mt["step"])) for c, mt in matched]
    return [_int_or_str(t) for t in tokens], steps, placement


def _int_or_str(v: str):
    return int(v) if str(v).isdigit() else str(v)


def build_cube(m: str, s: CubeModality, ctx: Context) -> Built:
    import xarray as xr

    where = f"modalities.{m}"
    path = ctx.file(s.path, f"{where}.path", folder=True)
    try:
        ds = xr.open_zarr(path) if path.is_dir() or path.suffix == ".zarr" else xr.open_dataset(path)
    except Exception as e:
        raise SpecError(f"{where}.path", f"{path}: cannot open the cube: {type(e).__name__}: {e}") from None
    with ds:
        names = _cube_variables(ds, s, f"{where}.variables", path.name)
        cube, inside = _sample_cube(ds, names, s, ctx.lon, ctx.lat)  # [N, time, V], [N]
        times = pd.DatetimeIndex(ds[s.time].values)
    cube[~inside] = np.nan
    tokens, values, n_features = _cube_tokens(cube, times, s.tokens, f"{where}.tokens")
    valid = np.isfinite(values).all(axis=2)  # NaN in a cube is no data (sea, outside the grid), not a fault
    spec = ModalitySpec(kind="timeseries", tokens=len(tokens), features=n_features, axes={"year" if s.tokens == "year" else "time": tokens},
                        description=s.description or f"{', '.join(names)} from {path.name} at the nearest cell"
                                                     + (" (features: variable x step of the year)" if s.tokens == "year" else ""))
    return Built(spec, R.TableSource(np.where(valid[..., None], values, 0.0).astype(np.float32), valid), "feature")


def _cube_variables(ds, s: CubeModality, where: str, file: str) -> list[str]:
    dims = {s.lat, s.lon, s.time}
    names = s.variables or [v for v in ds.data_vars if dims <= set(ds[v].dims)]
    if not names:
        raise SpecError(where, f"no variable of {file} has dims {s.lat}, {s.lon}, {s.time}")
    for v in names:
        if v not in ds.data_vars:
            raise SpecError(where, f"{file} has no variable {v!r} (it has {', '.join(map(str, ds.data_vars))})")
        if not dims <= set(ds[v].dims):
            raise SpecError(where, f"{v} has dims {list(ds[v].dims)}, expected {s.lat}, {s.lon}, {s.time}")
    return names


def _cube_tokens(cube: np.ndarray, times: pd.DatetimeIndex, mode: str, where: str):
    """[N, time, V] -> (token names, [N, T, F], F): per time step, or per year with feature = variable * steps + step."""
    if mode == "step":
        return [str(t.date()) for t in times], cube, cube.shape[2]
    years = np.asarray(times.year)
    tokens = sorted(set(years.tolist()))
    per = {y: int((years == y).sum()) for y in tokens}
    if len(set(per.values())) != 1:
        raise SpecError(where, f"years hold different numbers of time steps ({per}); use tokens: step")
    n, steps, v = len(cube), per[tokens[0]], cube.shape[2]
    by_year = cube[:, np.argsort(years, kind="stable")].reshape(n, len(tokens), steps, v)
    return tokens, by_year.transpose(0, 1, 3, 2).reshape(n, len(tokens), v * steps), v * steps


def _sample_cube(ds, names: list[str], s: CubeModality, lon: np.ndarray, lat: np.ndarray):
    """Nearest cell of every point: [N, time, V] float32, and whether the point lies within the grid."""
    import xarray as xr

    grid_lon, grid_lat = ds[s.lon].values.astype(float), ds[s.lat].values.astype(float)
    if grid_lon.max() > 180:  # a 0..360 grid
        lon = np.mod(lon, 360.0)
    inside = _within(grid_lon, lon) & _within(grid_lat, lat)
    at = {s.lat: xr.DataArray(lat, dims="points"), s.lon: xr.DataArray(lon, dims="points")}
    stacked = [ds[v].sel(at, method="nearest").transpose("points", s.time).values for v in names]
    return np.stack(stacked, -1).astype(np.float32), inside


def _within(grid: np.ndarray, x: np.ndarray) -> np.ndarray:
    half = np.abs(np.diff(np.sort(grid))).min() / 2 if len(grid) > 1 else 0.5
    return (x >= grid.min() - half) & (x <= grid.max() + half)


def build_embeddings(m: str, s: EmbeddingsModality, ctx: Context) -> Built:
    path = ctx.file(s.path, f"modalities.{m}.path")
    try:
        table = R.read_embeddings(path, s.id_column)
    except UserError as e:
        raise SpecError(f"modalities.{m}.path", str(e)) from None
    name = s.name or (m if m in table.vectors else next(iter(table.vectors)) if len(table.vectors) == 1 else None)
    if name not in table.vectors:
        raise SpecError(f"modalities.{m}.name", f"{path.name} holds {', '.join(table.vectors)}; say which with name:")
    d = table.vectors[name].shape[1]
    spec = ModalitySpec(kind="embedding", tokens=1, features=d, axes={"embedding": [name]},
                        description=s.description or f"{name} embedding from {path.name}")
    return Built(spec, R.embedding_source(table, name, ctx.keys(m, s)), "feature")


def build_location(m: str, s: LocationModality, ctx: Context) -> Built:
    spec = ModalitySpec(kind="location", tokens=1, features=4 * s.scales, axes={"position": ["lonlat"]},
                        description=s.description or f"sin/cos of 2^k lon, 2^k lat, k < {s.scales}")
    enc = R.location_encoding(ctx.lon, ctx.lat, s.scales)
    return Built(spec, R.TableSource(enc[:, None, :], np.ones((len(enc), 1), bool)), "feature")


BUILDERS = {
    "columns": build_columns, "raster_values": build_raster_values, "raster_patches": build_raster_patches,
    "files": build_files, "timeseries_csv": build_timeseries_csv, "cube": build_cube, "embeddings": build_embeddings,
    "location": build_location,
}


# ================================================================ the plan
def spec_confinement(spec: DatasetSpec, spec_path: Path | str) -> Confinement:
    """Where a spec's files may be read: its root, itself inside the spec's folder (unless allow_outside_root)."""
    root = spec_root(spec, spec_path)
    outside = Confinement.at(Path(spec_path).parent, spec.allow_outside_root).why_not(root)
    if outside:
        raise SpecError("root", outside)
    return Confinement.at(root, spec.allow_outside_root)


def build_modalities(modalities: dict[str, Modality], ctx: Context, source: Path | str) -> dict[str, Built]:
    """Every modality's description and token source at the context's points; all errors reported at once."""
    built, errors = {}, []
    for m, mspec in modalities.items():
        try:
            built[m] = BUILDERS[mspec.kind](m, mspec, ctx)
        except SpecErrors as e:
            errors += e.lines
    if errors:
        raise UserError(_error_list(Path(source), errors))
    return built


def plan_custom(spec: DatasetSpec, spec_path: Path | str, like: Path | str | None = None) -> tuple[StorePlan, R.SourceDecoder]:
    """The store plan of a dataset spec; `like`: a training store whose class list and normalisation are reused."""
    from miam_cli.data.like import adopt_like, open_like

    spec_path = Path(spec_path)
    root = spec_root(spec, spec_path)
    for folder in {spec_path.parent, root}:
        refuse_unfinished(folder)
    like_store = open_like(like)
    try:
        like_classes = like_store.classes["original_id"].astype(str).tolist() if like_store else None
        ctx, labels, classes, task, dropped = build_points(spec, root, like_classes, spec_confinement(spec, spec_path))
        split, split_info = split_points(ctx, spec.points.split, labels, len(classes))
    except SpecErrors as e:
        raise UserError(_error_list(spec_path, e.lines)) from None
    built = build_modalities(spec.modalities, ctx, spec_path)
    classes = _with_counts(classes, labels, split)
    samples = pd.DataFrame({"sample_id": ctx.ids, "split": split, "lon": ctx.lon, "lat": ctx.lat, "labels": labels})
    plan = StorePlan(
        dataset=spec.name,
        task=TaskSpec(type=task, num_classes=len(classes), metric="top1" if task == "multiclass" else "macro_auc"),
        modalities={m: b.spec for m, b in built.items()}, samples=samples, classes=classes,
        provenance={"spec": str(spec_path.resolve()), "root": str(root.resolve()), "spec_content": spec.model_dump(mode="json", by_alias=True)},
        split_info=split_info, dropped=dropped, normalization_scope={m: b.scope for m, b in built.items()}, warnings=list(ctx.warnings),
    )
    if like_store is not None:
        plan = adopt_like(plan, like_store)
    return plan, R.SourceDecoder(ctx.ids, {m: b.source for m, b in built.items()})


def _error_list(spec_path: Path, lines: list[str]) -> str:
    return f"{spec_path}: {len(lines)} error(s)\n  " + "\n  ".join(lines)


def _with_counts(classes: pd.DataFrame, labels: list[np.ndarray], split: np.ndarray) -> pd.DataFrame:
    classes = classes.copy()
    for s in ("train", "val", "test"):
        hits = [lab for lab, sp in zip(labels, split) if sp == s]
        classes[f"count_{s}"] = np.bincount(np.concatenate(hits) if hits else np.zeros(0, int), minlength=len(classes))[: len(classes)]
    return classes
