"""The map's grid: a template raster's, or a bbox cut at a resolution in a CRS; its tiles and pixel centres.

Pixels are processed in square tiles (windows of the grid, row-major), so that memory depends on the
tile size and not on the map's. A pixel's sample sits at the pixel centre, given to the modality
builders in lon/lat (they reproject to each raster's own CRS, as `prepare custom` does for points).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.transform import Affine, from_origin
from rasterio.windows import Window

from miam_cli.data.confine import Confinement
from miam_cli.errors import UserError
from miam_cli.maps.spec import GridSpec

MAX_PIXELS = 1 << 34  # a typo in the resolution should not start a map of 10^12 pixels


@dataclass(frozen=True)
class Grid:
    transform: Affine
    width: int
    height: int
    crs: str  # as rasterio takes it (EPSG code or WKT)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def tiles(self, size: int) -> list[Window]:
        """Windows of `size` x `size` pixels (smaller at the right and bottom edges), row-major."""
        return [Window(c, r, min(size, self.width - c), min(size, self.height - r))
                for r in range(0, self.height, size) for c in range(0, self.width, size)]

    def centres(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the pixel centres of `window` in the grid's CRS, row-major, float64."""
        return self._xy(np.arange(window.row_off, window.row_off + window.height), np.arange(window.col_off, window.col_off + window.width))

    def lonlat(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """The pixel centres of `window` in WGS84 lon/lat (what the modality builders take)."""
        return self._to_lonlat(*self.centres(window))

    def probe_points(self, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat of an n x n lattice of pixel centres spread over the grid (every pixel if it has fewer)."""
        rows = np.unique(np.linspace(0, self.height - 1, min(n, self.height)).round().astype(int))
        cols = np.unique(np.linspace(0, self.width - 1, min(n, self.width)).round().astype(int))
        return self._to_lonlat(*self._xy(rows, cols))

    def _xy(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, c = np.meshgrid(np.asarray(rows) + 0.5, np.asarray(cols) + 0.5, indexing="ij")
        t = self.transform
        return (t.a * c + t.b * r + t.c).ravel(), (t.d * c + t.e * r + t.f).ravel()

    def _to_lonlat(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if _is_lonlat(self.crs):
            return x, y
        from rasterio.warp import transform

        lon, lat = transform(self.crs, "EPSG:4326", x.tolist(), y.tolist())
        return np.asarray(lon), np.asarray(lat)

    def describe(self) -> dict:
        return {"width": self.width, "height": self.height, "crs": self.crs, "transform": list(self.transform)[:6]}


def _is_lonlat(crs: str) -> bool:
    from rasterio.crs import CRS

    return CRS.from_user_input(crs) == CRS.from_epsg(4326)


def grid_from_spec(spec: GridSpec, base: Path, confine: Confinement | None = None) -> Grid:
    """The grid; a template raster must resolve inside `confine` (the map spec's folder, unless it allows outside)."""
    if spec.template is not None:
        path = Path(spec.template) if Path(spec.template).is_absolute() else base / spec.template
        reason = confine.why_not(path) if confine else None
        if reason:
            raise UserError(f"grid.template: {reason}")
        return _template_grid(path)
    crs = _crs_text(spec.crs)
    xmin, ymin, xmax, ymax = spec.bbox
    rx, ry = spec.pixel_size
    width, height = math.ceil((xmax - xmin) / rx - 1e-9), math.ceil((ymax - ymin) / ry - 1e-9)
    if _is_lonlat(crs) and not (-180 <= xmin and xmax <= 180 and -90 <= ymin and ymax <= 90):
        raise UserError(f"grid.bbox {list(spec.bbox)} lies outside lon -180..180 / lat -90..90: "
                        "is grid.crs right (the bbox is read in grid.crs units)?")
    _check_size(width, height, "grid.resolution")
    return Grid(from_origin(xmin, ymax, rx, ry), width, height, crs)


def _template_grid(path: Path) -> Grid:
    import rasterio

    if not path.is_file():
        raise UserError(f"grid.template: no such file {path}")
    try:
        with rasterio.open(path) as src:
            crs = src.crs.to_string() if src.crs else "EPSG:4326"
            grid = Grid(src.transform, src.width, src.height, crs)
    except rasterio.errors.RasterioIOError as e:
        raise UserError(f"grid.template: {path}: cannot read the raster: {e}") from None
    _check_size(grid.width, grid.height, "grid.template")
    return grid


def _crs_text(text: str) -> str:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(text).to_string()
    except CRSError as e:
        raise UserError(f"grid.crs {text!r}: not a CRS rasterio knows ({e})") from None


def _check_size(width: int, height: int, key: str) -> None:
    if width * height > MAX_PIXELS:
        raise UserError(f"{key}: the grid would have {width} x {height} pixels; is the resolution in the CRS's units?")
