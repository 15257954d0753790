"""Tiles on disk, then one Cloud-Optimised GeoTIFF.

`OUT.parts/` holds `plan.json` (what the map is: grid, bands, run, inputs) and one `tile-NNNNNN.npz`
per finished tile, each written atomically, so a killed run redoes at most the tile it was in and a
rerun with the same settings resumes (a rerun with other settings is refused). Shard i of n owns the
tiles t with t % n == i, so SLURM array tasks never write the same file. When every tile is there,
the tiles are written window by window into a tiled GeoTIFF, which GDAL's COG driver copies into
`OUT` (internal tiles, overviews, deflate); `OUT` appears by an atomic rename only then, so a file at
`OUT` is always a complete map.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from miam_cli.errors import UserError
from miam_cli.files import writable_file
from miam_cli.maps.grid import Grid
from miam_cli.shards import Shard, owned
from miam_cli.store.atomic import atomic_write, atomic_write_json

BLOCK = 256  # COG internal tile side


class TileParts:
    def __init__(self, out: Path, plan: dict, tiles: list[Window]):
        self.out, self.plan, self.tiles = Path(out), plan, tiles
        self.dir = self.out.parent / f"{self.out.name}.parts"

    def begin(self, overwrite: bool = False) -> None:
        writable_file(self.out, "map (--out)")
        if self.out.exists() and not overwrite:
            raise UserError(f"{self.out} exists (a complete map); pass --overwrite to compute it again")
        plan_file = self.dir / "plan.json"
        if plan_file.exists():
            if json.loads(plan_file.read_text()) == self.plan:
                return
            if not overwrite:
                raise UserError(f"{self.dir} holds an unfinished map with other settings (run, grid, bands or inputs); "
                                "remove it or pass --overwrite")
        if overwrite:
            shutil.rmtree(self.dir, ignore_errors=True)
        atomic_write_json(plan_file, self.plan)

    def _file(self, tile: int) -> Path:
        return self.dir / f"tile-{tile:06d}.npz"

    def pending(self, shard: Shard | None = None) -> list[int]:
        return [t for t in owned(len(self.tiles), shard) if not self._file(t).exists()]

    def write(self, tile: int, bands: np.ndarray, valid_pixels: int, efficiency_gap: float) -> None:
        atomic_write(self._file(tile), lambda p: _save(p, bands, valid_pixels, efficiency_gap))

    def check_complete(self) -> None:
        missing = self.pending()
        if missing:
            raise UserError(f"{self.dir}: {len(missing)} of {len(self.tiles)} tile(s) not computed yet (first: {missing[0]}); "
                            "run the remaining shards first")

    def stats(self) -> dict:
        """Valid pixels and the largest efficiency gap over every tile on disk (whoever computed it)."""
        valid, gap = 0, 0.0
        for t in range(len(self.tiles)):
            with np.load(self._file(t)) as z:
                valid, gap = valid + int(z["valid_pixels"]), max(gap, float(z["efficiency_gap"]))
        return {"valid_pixels": valid, "efficiency_gap": gap}

    def assemble(self, grid: Grid, names: list[str], tags: dict) -> Path:
        """Every tile into one COG at `out` (atomically), then the parts are removed."""
        import rasterio
        from rasterio.shutil import copy as raster_copy

        self.check_complete()
        fd, tmp = tempfile.mkstemp(prefix=".tiles.", suffix=".tif", dir=self.dir)
        os.close(fd)
        profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": len(names), "dtype": "float32",
                   "crs": grid.crs, "transform": grid.transform, "nodata": float("nan"), "tiled": True,
                   "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
        # a small block cache: GDAL's default (5% of RAM) would grow with the map instead of staying flat
        with rasterio.Env(GDAL_CACHEMAX=64):
            with rasterio.open(tmp, "w", **profile) as dst:
                for t, window in enumerate(self.tiles):
                    dst.write(_load(self._file(t), len(names), window), window=window)
                for b, name in enumerate(names, start=1):
                    dst.set_band_description(b, name)
                dst.update_tags(**{k: v if isinstance(v, str) else json.dumps(v) for k, v in tags.items()})
            atomic_write(self.out, lambda p: raster_copy(tmp, p, driver="COG", compress="DEFLATE", blocksize=BLOCK,
                                                         overview_resampling="nearest", bigtiff="IF_SAFER"))
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.out


def _save(path: Path, bands: np.ndarray, valid_pixels: int, efficiency_gap: float) -> None:
    with open(path, "wb") as f:  # a file object: numpy would otherwise append .npz to the temporary name
        np.savez_compressed(f, bands=bands.astype(np.float32), valid_pixels=valid_pixels, efficiency_gap=efficiency_gap)


def _load(path: Path, count: int, window: Window) -> np.ndarray:
    with np.load(path) as z:
        bands = z["bands"]
    return bands.reshape(count, int(window.height), int(window.width))
