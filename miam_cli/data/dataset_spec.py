"""The dataset spec of `miam prepare custom` (pydantic models), read from YAML with every error named.

The spec (documented with a full example in docs/dataset-spec.md) names a points table (CSV or
Parquet: id, lon/lat or x/y with their CRS, labels, optional split) and modalities of seven kinds,
which `miam_cli.data.custom` builds into tokens:

| kind             | tokens                                                         | store kind |
| ---------------- | -------------------------------------------------------------- | ---------- |
| `columns`        | one per table column                                           | tabular    |
| `raster_values`  | one per raster band, sampled at the points (nodata -> invalid) | tabular    |
| `raster_patches` | band x sub-patch of a window around each point                 | image      |
| `files`          | per-point files found by a pattern with `{id}`: images, `.npy`/`.pt` cubes, audio | image / timeseries / audio |
| `timeseries_csv` | one per time step (or per group of steps, e.g. a year) of one-row-per-id CSVs | timeseries |
| `cube`           | a NetCDF/Zarr lat/lon/time cube at the nearest cell: one per year or time step | timeseries |
| `embeddings`     | one precomputed vector                                         | embedding  |
| `location`       | one multi-scale sinusoidal encoding of lon/lat                 | location   |

Validation here is of the spec alone (unknown keys or kinds, wrong types, patterns without `{id}`),
every error with its key path (exit 2); the checks against the data are the builders'. Map specs
(`miam_cli.maps.spec`) reuse the modality models and the error formatting.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from miam_cli.data import coords as C
from miam_cli.data import readers as R
from miam_cli.errors import UserError
from miam_cli.files import read_yaml

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
DEFAULT_MISSING = ["eos", "", "na", "nan", "null"]


# ================================================================ the spec (pydantic)
class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


LABEL_KINDS = ("class_", "species", "presence", "binary")


class LabelSpec(_Spec):
    binary: str | None = Field(None, description="a 0/1 (or true/false) column -> one class; rows with 0 are background (negatives)")
    class_: str | None = Field(None, alias="class", description="column with one class per point -> multiclass")
    species: str | None = Field(None, description="column with a list of species per point -> multilabel")
    separator: str | None = Field(None, description="separator of `species` lists (default: comma, semicolon or space)")
    presence: list[str] | str | None = Field(None, description="0/1 columns (a list, or a regex) -> multilabel")
    min_count: int = Field(1, ge=1, description="keep classes with at least this many points")

    @model_validator(mode="after")
    def _one_kind(self) -> "LabelSpec":
        given = [k for k in LABEL_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of binary, class, species, presence")
        return self


class SplitSpec(_Spec):
    column: str | None = Field(None, description="column with train/val/test; absent: spatial blocks")
    block_size: float | str = Field(0.5, description="spatial block size: degrees (0.5), or a distance (50km, 2000m)")
    balance: Literal["labels", "none"] = Field(
        "labels", description="labels: blocks assigned so each split keeps the overall positive rate / class coverage; none: random order")
    seed: int = 0
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)

    @field_validator("block_size")
    @classmethod
    def _size(cls, v):
        C.parse_block_size(v)  # raises ValueError with the reason
        return v


class PointsSpec(_Spec):
    path: str
    sep: str | None = Field(None, description="CSV separator (default: detected)")
    id: str = "id"
    lon: str = "lon"
    lat: str = "lat"
    crs: str | int | None = Field(None, description="CRS of the coordinates: an EPSG code (32631) or WKT; default WGS84 lon/lat degrees")
    x: str | None = Field(None, description="with crs: the easting column (an alias of lon)")
    y: str | None = Field(None, description="with crs: the northing column (an alias of lat)")
    labels: LabelSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    unlabelled: Literal["predict", "drop"] = Field(
        "predict", description="points whose label cell is empty: kept in the `predict` split (for `miam predict`), or dropped")

    @model_validator(mode="after")
    def _xy(self) -> "PointsSpec":
        if (self.x is None) != (self.y is None):
            raise ValueError("give both x and y")
        if self.x is not None and self.crs is None:
            raise ValueError("x/y are coordinates in a projected CRS: set points.crs too (e.g. crs: 32631), or name lon/lat degrees")
        if self.x is not None and {"lon", "lat"} & self.model_fields_set:
            raise ValueError("give lon/lat or x/y, not both")
        return self

    @field_validator("crs")
    @classmethod
    def _crs(cls, v):
        if v is not None:
            C.parse_crs(v)  # raises ValueError with pyproj's reason
        return v

    @property
    def coordinate_keys(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """((key, column) of the first coordinate, (key, column) of the second)."""
        return (("x", self.x), ("y", self.y)) if self.x is not None else (("lon", self.lon), ("lat", self.lat))


class _Modality(_Spec):
    key: str | None = Field(None, description="points column naming this modality's inputs (default: points.id)")
    description: str = ""


class ColumnsModality(_Modality):
    kind: Literal["columns"]
    columns: list[str] | None = None
    match: str | None = Field(None, description="regex selecting columns instead of a list")

    @model_validator(mode="after")
    def _one(self) -> "ColumnsModality":
        if (self.columns is None) == (self.match is None):
            raise ValueError("give exactly one of columns, match")
        return self


class RasterValuesModality(_Modality):
    kind: Literal["raster_values"]
    files: dict[str, str] | list[str]


class RasterPatchesModality(_Modality):
    kind: Literal["raster_patches"]
    file: str
    size: int = Field(gt=0, description="window side in pixels")
    grid: int = Field(1, ge=1)
    bands: list[str] | None = None


class AudioOptions(_Spec):
    seconds: float = Field(5.0, gt=0)
    tokens: int = Field(10, ge=1)
    n_mels: int = Field(32, ge=1)
    sample_rate: int = Field(16000, ge=1000)

    def params(self) -> R.LogMelParams:
        return R.LogMelParams(sample_rate=self.sample_rate, seconds=self.seconds, tokens=self.tokens, n_mels=self.n_mels,
                              fmax=self.sample_rate / 2)


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ID_FIELD = re.compile(r"^id(?:\[(-?\d*):(-?\d*)\])?$")


class FilesModality(_Modality):
    kind: Literal["files"]
    pattern: str | list[str]
    format: Literal["auto", "image", "array", "audio"] = "auto"
    bands: list[str] | None = None
    grid: int = Field(4, ge=1)
    size: int | None = Field(None, gt=0)
    token_axis: int = 0
    axis: str = "step"
    axis_values: list[str | int] | None = None
    audio: AudioOptions = Field(default_factory=AudioOptions)

    @field_validator("pattern")
    @classmethod
    def _has_id(cls, v):
        for p in [v] if isinstance(v, str) else v:
            fields = _PLACEHOLDER.findall(p)
            if not fields:
                raise ValueError(f"pattern {p!r} has no {{id}}: every point needs its own file, e.g. images/{{id}}.jpg")
            bad = [f for f in fields if not _ID_FIELD.match(f)]
            if bad:
                raise ValueError(f"pattern {p!r}: unknown placeholder {{{bad[0]}}} (use {{id}}, or a slice such as {{id[-2:]}})")
        return v

    @property
    def patterns(self) -> list[str]:
        return [self.pattern] if isinstance(self.pattern, str) else list(self.pattern)


class TimeseriesCsvModality(_Modality):
    kind: Literal["timeseries_csv"]
    files: dict[str, str] | str = Field(description="feature name -> CSV (e.g. one per band), or one CSV")
    id_column: str | None = Field(None, description="the CSVs' id column (default: their first column)")
    sep: str | None = None
    missing: list[str] = Field(default_factory=lambda: list(DEFAULT_MISSING))
    group: str | None = Field(None, description="regex with groups (?P<token>..) and (?P<step>..) over column names")
    axis: str = "step"

    @field_validator("missing", mode="before")
    @classmethod
    def _as_text(cls, v):
        # YAML turns `null` into None and -9999 into a number; markers are compared as text
        return ["null" if x is None else str(x) for x in v] if isinstance(v, list) else v


class CubeModality(_Modality):
    kind: Literal["cube"]
    path: str
    variables: list[str] | None = None
    lat: str = "lat"
    lon: str = "lon"
    time: str = "time"
    tokens: Literal["year", "step"] = "year"


class EmbeddingsModality(_Modality):
    kind: Literal["embeddings"]
    path: str
    name: str | None = Field(None, description="the modality inside the file (default: this modality's name, or its only one)")
    id_column: str = "id"


class LocationModality(_Modality):
    kind: Literal["location"]
    scales: int = Field(8, ge=1, le=24)


MODALITY_MODELS = (ColumnsModality, RasterValuesModality, RasterPatchesModality, FilesModality, TimeseriesCsvModality,
                   CubeModality, EmbeddingsModality, LocationModality)
Modality = Annotated[Union[MODALITY_MODELS], Field(discriminator="kind")]
KINDS = ("columns", "raster_values", "raster_patches", "files", "timeseries_csv", "cube", "embeddings", "location")


class DatasetSpec(_Spec):
    name: str = "custom"
    root: str | None = Field(None, description="folder that relative paths start from (default: the spec's folder)")
    allow_outside_root: bool = Field(False, description="read files outside the spec's folder (and its root); off: they are refused")
    points: PointsSpec
    modalities: dict[str, Modality]

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not NAME.match(v):
            raise ValueError(f"{v!r}: use letters, digits, _ and - (it names the store folder)")
        return v

    @field_validator("modalities")
    @classmethod
    def _names(cls, v):
        if not v:
            raise ValueError("name at least one modality")
        bad = [m for m in v if not NAME.match(m)]
        if bad:
            raise ValueError(f"modality name {bad[0]!r}: use letters, digits, _ and -")
        return v


def load_spec(path: Path | str) -> DatasetSpec:
    return load_yaml_model(path, DatasetSpec, "dataset spec", "a YAML mapping (see docs/dataset-spec.md)")


def load_yaml_model(path: Path | str, model: type[BaseModel], what: str, shape: str):
    """A YAML file validated by a pydantic model: every error with its key path, exit 2 (dataset and map specs)."""
    path = Path(path)
    data = read_yaml(path, what)
    if not isinstance(data, dict):
        raise UserError(f"{path}: a {what} is {shape}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(format_spec_errors(e, str(path))) from None


def format_spec_errors(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} error(s)"]
    for err in error.errors():
        loc = [str(x) for x in err["loc"]]
        if len(loc) > 2 and loc[0] == "modalities" and loc[2] in KINDS:
            loc.pop(2)  # the union's tag, not a key the user wrote
        where = ".".join(loc) or "(top level)"
        ctx = err.get("ctx") or {}
        if err["type"] == "union_tag_invalid":
            lines.append(f"  {where}.kind: unknown kind {ctx.get('tag')!r} (expected one of: {', '.join(KINDS)})")
        elif err["type"] == "union_tag_not_found":
            lines.append(f"  {where}.kind: required key missing (one of: {', '.join(KINDS)})")
        elif err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc[-1], _ALL_KEYS, n=1, cutoff=0.6)
            lines.append(f"  {where}: unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""))
        elif err["type"] == "missing":
            lines.append(f"  {where}: required key missing")
        else:
            got = err.get("input")
            lines.append(f"  {where}: {err['msg'].removeprefix('Value error, ')}" + ("" if isinstance(got, (dict, list)) else f" (got {got!r})"))
    return "\n".join(lines)


_ALL_KEYS = sorted({f.alias or n for m in (LabelSpec, SplitSpec, PointsSpec, DatasetSpec, AudioOptions, *MODALITY_MODELS)
                    for n, f in m.model_fields.items()})


def fill_pattern(pattern: str, key: str) -> str:
    """`{id}` -> the key; `{id[a:b]}` -> a Python slice of it (GLC folders: `{id[-2:]}/{id[-4:-2]}`)."""
    def one(match: re.Match) -> str:
        a, b = _ID_FIELD.match(match.group(1)).groups()
        return key if a is None else key[int(a) if a else None : int(b) if b else None]

    return _PLACEHOLDER.sub(one, pattern)


def spec_root(spec: DatasetSpec, spec_path: Path | str) -> Path:
    """The folder relative paths of a spec start from."""
    spec_path = Path(spec_path)
    return (spec_path.parent / spec.root) if spec.root else spec_path.parent
