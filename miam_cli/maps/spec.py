"""The map spec: a grid, and the dataset-spec modalities computed at every pixel.

```yaml
dataset: my-data.yaml        # the dataset spec the run's store was prepared from (default: the store's own)
grid:
  template: rasters/bio1.tif # take this raster's grid (transform, size, CRS) ...
  # ... or a box:
  # bbox: [2.0, 43.0, 4.0, 45.0]   # xmin, ymin, xmax, ymax in `crs`
  # resolution: 0.01               # one number, or [x, y], in `crs` units
  # crs: EPSG:4326
species: ["1361", "4397"]    # bands (default: every class of the run; --species overrides)
# allow_outside_root: true   # read files outside this spec's folder (off: refused, as in a dataset spec)
```

Instead of `dataset:`, `modalities:` may define the modalities inline, exactly as a dataset spec does
(with `root:` for relative paths). Only modalities that can be computed at any location are used:
`raster_values`, `raster_patches`, `cube` and `location`; a referenced dataset spec's other
modalities (columns, per-sample files, tables, embeddings) are never visible on the map.

Reads are confined as a dataset spec's are (`miam_cli.data.confine`): the template raster, a referenced
dataset spec and the inline modalities' files must resolve (symlinks included) inside this spec's folder
(and the inline `root` inside it), unless `allow_outside_root: true`. A referenced dataset spec, and the
one recorded in the run's store, then confine their own files to their own root, by their own setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from miam_cli.data.confine import Confinement
from miam_cli.data.custom import (DatasetSpec, Modality, SpecError, format_spec_errors, load_spec, load_yaml_model,
                                  spec_confinement, spec_root)
from miam_cli.errors import UserError

LOCATION_KINDS = ("raster_values", "raster_patches", "cube", "location")


class GridSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: str | None = Field(None, description="a raster whose grid (transform, size, CRS) the map takes")
    bbox: tuple[float, float, float, float] | None = Field(None, description="xmin, ymin, xmax, ymax in `crs`")
    resolution: float | tuple[float, float] | None = Field(None, description="pixel size in `crs` units: one number, or [x, y]")
    crs: str = Field("EPSG:4326", description="CRS of bbox and resolution (an EPSG code or WKT)")

    @model_validator(mode="after")
    def _one_grid(self) -> "GridSpec":
        if (self.template is None) == (self.bbox is None):
            raise ValueError("give exactly one of template, bbox")
        if self.bbox is not None:
            if self.resolution is None:
                raise ValueError("a bbox needs a resolution")
            if not all(math.isfinite(v) for v in (*self.bbox, *self.pixel_size)):
                raise ValueError(f"bbox {list(self.bbox)}, resolution {self.resolution}: every number must be finite")
            xmin, ymin, xmax, ymax = self.bbox
            if not (xmin < xmax and ymin < ymax):
                raise ValueError(f"bbox {list(self.bbox)}: expected xmin < xmax and ymin < ymax")
            res = self.resolution if isinstance(self.resolution, tuple) else (self.resolution, self.resolution)
            if min(res) <= 0:
                raise ValueError(f"resolution {self.resolution}: must be > 0")
        return self

    @property
    def pixel_size(self) -> tuple[float, float]:
        return self.resolution if isinstance(self.resolution, tuple) else (self.resolution, self.resolution)


class MapSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str | None = Field(None, description="dataset spec whose computable modalities are used (default: the run's store's)")
    root: str | None = Field(None, description="folder relative paths of inline modalities start from (default: this spec's)")
    modalities: dict[str, Modality] | None = Field(None, description="inline modality definitions, as in a dataset spec")
    grid: GridSpec
    species: list[str] | None = Field(None, description="species of the probability bands (ids, names or class indices)")
    allow_outside_root: bool = Field(False, description="read files outside this spec's folder (and its root); off: they are refused")

    @model_validator(mode="after")
    def _one_source(self) -> "MapSpec":
        if self.dataset is not None and self.modalities is not None:
            raise ValueError("give at most one of dataset, modalities")
        if self.modalities is not None:
            bad = {m: s.kind for m, s in self.modalities.items() if s.kind not in LOCATION_KINDS}
            if bad:
                m, kind = next(iter(bad.items()))
                raise ValueError(f"modality {m}: kind {kind} cannot be computed at a pixel (use {', '.join(LOCATION_KINDS)})")
        return self


@dataclass
class MapInputs:
    """What the map computes at each pixel: the modality definitions and the folder their paths start from."""

    modalities: dict[str, Modality]
    root: Path
    source: str  # the file they come from, for error messages
    skipped: dict[str, str]  # modality -> kind, of a referenced dataset spec, that cannot be computed at a pixel
    confine: Confinement  # where their files may be read


def load_map_spec(path: Path | str) -> MapSpec:
    return load_yaml_model(path, MapSpec, "map spec", "a YAML mapping with a grid (see docs/maps.md)")


def map_inputs(spec: MapSpec, spec_path: Path, store_provenance: dict) -> MapInputs:
    """The modalities to compute: inline, from the named dataset spec, or from the spec the run's store was prepared from."""
    spec_path = Path(spec_path)
    if spec.modalities is not None:
        root = confined_path(spec, spec_path, spec.root or ".", "root")
        return MapInputs(dict(spec.modalities), root, str(spec_path), {}, Confinement.at(root, spec.allow_outside_root))
    if spec.dataset is not None:
        dataset_path = confined_path(spec, spec_path, spec.dataset, "dataset")
        dataset = load_spec(dataset_path)
        try:
            confine = spec_confinement(dataset, dataset_path)
        except SpecError as e:
            raise UserError(f"{dataset_path}: {e.lines[0]}") from None
        return _computable(dataset, spec_root(dataset, dataset_path), str(dataset_path), confine)
    content = store_provenance.get("spec_content")
    if not content:
        raise UserError(f"{spec_path}: the run's store was not prepared from a dataset spec; name one with `dataset:` "
                        "or define the modalities inline with `modalities:`")
    try:
        dataset = DatasetSpec.model_validate(content)
    except ValidationError as e:
        raise UserError(format_spec_errors(e, f"the dataset spec recorded in the run's store ({store_provenance.get('spec')})")) from None
    root = Path(store_provenance["root"])
    return _computable(dataset, root, str(store_provenance.get("spec")), Confinement.at(root, dataset.allow_outside_root))


def confined_path(spec: MapSpec, spec_path: Path, rel: str | Path, key: str) -> Path:
    """`rel` (relative to the map spec's folder) when it may be read under the spec's confinement, else exit 2 naming `key`."""
    path = Path(rel) if Path(rel).is_absolute() else Path(spec_path).parent / rel
    reason = Confinement.at(Path(spec_path).parent, spec.allow_outside_root).why_not(path)
    if reason:
        raise UserError(f"{spec_path}: {key}: {reason}")
    return path


def _computable(dataset: DatasetSpec, root: Path, source: str, confine: Confinement) -> MapInputs:
    keep = {m: s for m, s in dataset.modalities.items() if s.kind in LOCATION_KINDS}
    skipped = {m: s.kind for m, s in dataset.modalities.items() if s.kind not in LOCATION_KINDS}
    return MapInputs(keep, root, source, skipped, confine)
