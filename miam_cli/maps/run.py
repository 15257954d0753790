"""`miam map RUN SPEC.yaml`: the library function behind the command.

The spec's modalities are built at a lattice of pixel centres first: a modality that does not
reproduce the run's store (kind, axes, feature size) is refused with exit 2, as is a grid where no
modality has data anywhere. Then tiles are computed (the pending ones of this shard), each saved on
its own, and the GeoTIFF is assembled when every tile is there (by an unsharded run, or `--merge`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from miam_cli import __version__
from miam_cli.data.confine import Confinement
from miam_cli.errors import UserError
from miam_cli.heap import return_large_blocks
from miam_cli.runs.loaded import LoadedRun
from miam_cli.maps.grid import Grid, grid_from_spec
from miam_cli.maps.output import TileParts
from miam_cli.maps.pixels import PixelTokens
from miam_cli.maps.spec import MapInputs, load_map_spec, map_inputs
from miam_cli.maps.tiles import BandPlan, tile_bands
from miam_cli.predict.run import class_ids
from miam_cli.predict.species import resolve_species
from miam_cli.shards import is_partial

PLAN_FORMAT = 1
TILE_BYTES = 256 << 20  # token values held for one tile (the tile side follows from it)


@dataclass
class MapRequest:
    spec: Path
    out: Path | None = None  # default: RUN/maps/<spec name>.tif (-shapley.tif with contributions)
    species: list[str] | None = None  # default: the spec's `species`, else every class
    contributions: bool = False
    tile: int | None = None  # tile side in pixels (default: from TILE_BYTES)
    shard: tuple[int, int] | None = None
    merge: bool = False
    overwrite: bool = False
    batch_size: int = 1024

    @property
    def sharded(self) -> bool:
        return is_partial(self.shard)


@dataclass
class MapResult:
    path: Path
    complete: bool  # False: this shard is done, other tiles are pending (assemble with --merge)
    width: int
    height: int
    bands: list[str]
    tiles: int
    tiles_computed: int  # by this call
    tiles_pending: int
    pixels_computed: int
    valid_pixels: int
    seconds: float
    efficiency_gap: float | None  # contributions: max |Σφ − (v(all) − v(none))| over the map's pixels
    target: str | None
    never_visible: list[str] = field(default_factory=list)  # the run's modalities the spec does not compute
    skipped: dict[str, str] = field(default_factory=dict)  # dataset-spec modalities that cannot be computed at a pixel

    @property
    def pixels_per_second(self) -> float:
        return self.pixels_computed / self.seconds if self.seconds > 0 else float("nan")


def run_map(run: LoadedRun, req: MapRequest, device="cpu", progress: Callable[[int, int], None] | None = None,
            log: Callable[[str], None] = lambda _m: None) -> MapResult:
    return_large_blocks()  # flat memory over the tiles: see miam_cli/heap.py
    spec_path = Path(req.spec)
    spec = load_map_spec(spec_path)
    inputs = map_inputs(spec, spec_path, run.store.meta.provenance)
    grid = grid_from_spec(spec.grid, spec_path.parent, Confinement.at(spec_path.parent, spec.allow_outside_root))
    pixels = PixelTokens(inputs, run.store, run.layout.names)
    never = _check_inputs(pixels, grid, run, inputs, log)
    plan = _band_plan(run, req.species or spec.species, req.contributions)
    size = req.tile or tile_side(run, plan)
    tiles = grid.tiles(size)
    out = Path(req.out) if req.out else run.rundir.maps_dir / f"{spec_path.stem}{'-shapley' if req.contributions else ''}.tif"
    parts = TileParts(out, _plan_record(run, grid, plan, size, inputs), tiles)
    parts.begin(req.overwrite and not req.merge)
    todo = [] if req.merge else parts.pending(req.shard)
    start, computed, valid = time.monotonic(), 0, 0
    for done, t in enumerate(todo, start=1):
        lon, lat = grid.lonlat(tiles[t])
        tile = tile_bands(run, pixels, plan, lon, lat, req.batch_size, device)
        parts.write(t, tile.bands, tile.valid_pixels, tile.efficiency_gap)
        computed, valid = computed + len(lon), valid + tile.valid_pixels
        if progress:
            progress(done, len(todo))
    seconds = time.monotonic() - start
    pending = len(parts.pending())
    complete = req.merge or (pending == 0 and not req.sharded)  # --merge refuses, naming the first missing tile
    stats = {}
    if complete:
        parts.check_complete()
        stats = parts.stats()
        parts.assemble(grid, plan.names, _tags(run, plan, never, stats))
    return MapResult(out, complete, grid.width, grid.height, plan.names, len(tiles), len(todo), pending, computed,
                     stats.get("valid_pixels", valid), seconds, stats.get("efficiency_gap") if plan.contributions else None,
                     plan.target if plan.contributions else None, never, inputs.skipped)


def _check_inputs(pixels: PixelTokens, grid: Grid, run: LoadedRun, inputs: MapInputs, log) -> list[str]:
    """Refuse a spec that does not reproduce the run's modalities, or a grid where none has data."""
    lon, lat = grid.probe_points()
    never = pixels.check(lon, lat, f"the run's store {run.store.path}")
    if inputs.skipped:
        log(f"warning: not computable at a pixel, never visible on the map: {', '.join(f'{m} ({k})' for m, k in inputs.skipped.items())}")
    if never:
        log(f"warning: the run reads {', '.join(never)}, which {inputs.source} does not compute: never visible on the map")
    batch = pixels.batch(lon, lat)
    if not any(bool(v.any()) for v in batch.valid.values()):
        raise UserError(f"the grid ({grid.width} x {grid.height} px, lon {lon.min():.4g}..{lon.max():.4g}, lat {lat.min():.4g}..{lat.max():.4g}) "
                        f"has no pixel where a modality of {inputs.source} has data: is it outside every raster?")
    return never


def _band_plan(run: LoadedRun, species: list[str] | None, contributions: bool) -> BandPlan:
    chosen = resolve_species(run.store, species) or list(range(run.store.meta.task.num_classes))
    ids = class_ids(run)
    return BandPlan(tuple(chosen), tuple(str(ids[k]) for k in chosen), tuple(run.layout.group_names),
                    run.task == "multilabel", contributions)


def tile_side(run: LoadedRun, plan: BandPlan) -> int:
    """Tiles whose token values take about TILE_BYTES (raw, normalised and as tensors), 16 to 512 px a side."""
    per_pixel = sum(m.tokens * (12 * m.features + 2) for m in run.layout.modalities) + 8 * len(plan.names)
    side = int(math.sqrt(TILE_BYTES / per_pixel)) // 16 * 16
    return max(16, min(512, side))


def _plan_record(run: LoadedRun, grid: Grid, plan: BandPlan, size: int, inputs: MapInputs) -> dict:
    """What the tiles on disk are; a rerun whose record differs does not mix its tiles with them."""
    return {"format": PLAN_FORMAT, "run": str(run.path.resolve()), "checkpoint": run.which, "grid": grid.describe(), "tile": size,
            "bands": plan.names, "inputs": {m: s.model_dump(mode="json") for m, s in inputs.modalities.items()},
            "root": str(inputs.root.resolve())}


def _tags(run: LoadedRun, plan: BandPlan, never: list[str], stats: dict) -> dict:
    tags = {"miam_version": __version__, "miam_run": str(run.path.resolve()), "miam_checkpoint": run.which,
            "species": list(plan.species_ids), "coverage_bits": {g: 1 << i for i, g in enumerate(plan.groups)},
            "never_visible": never, "valid_pixels": stats.get("valid_pixels", 0)}
    if plan.contributions:
        tags.update(contribution_target=plan.target, efficiency_max_gap=stats.get("efficiency_gap", 0.0))
    return tags
