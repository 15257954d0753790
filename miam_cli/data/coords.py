"""Point coordinates: the points table's own CRS, WGS84 lon/lat for the store, block sizes.

Points are reprojected once, with pyproj, into WGS84 lon/lat: what `samples.parquet`, the spatial
blocks (in degrees) and the `location` and `cube` modalities use. Rasters are sampled from the
original coordinates, transformed straight into each raster's own CRS (not at all when it is the
points' CRS), so no coordinate goes through two transforms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

WGS84 = "EPSG:4326"
METRES_PER_DEGREE_LAT = 111_320.0  # one degree of latitude on the ground (within 0.5% everywhere)
_SIZE = re.compile(r"^\s*(?P<value>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>km|m|deg|degrees?|°)?\s*$", re.IGNORECASE)


def parse_crs(value):
    """A pyproj CRS from an EPSG code (32631, "32631", "EPSG:32631") or WKT / PROJ text.
    Raises ValueError with pyproj's reason."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    text = str(value).strip()
    try:
        return CRS.from_epsg(int(text)) if text.isdigit() else CRS.from_user_input(text)
    except (CRSError, ValueError) as e:
        raise ValueError(f"{text[:60]!r} is not a CRS (an EPSG code such as 32631, or WKT): {e}") from None


def to_lonlat(x: np.ndarray, y: np.ndarray, crs) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 (lon, lat) of points given in `crs` (x = easting, y = northing); inf where undefined."""
    from pyproj import Transformer

    transformer = Transformer.from_crs(crs, WGS84, always_xy=True)
    lon, lat = transformer.transform(np.asarray(x, float), np.asarray(y, float), errcheck=False)
    return np.asarray(lon, float), np.asarray(lat, float)


def is_metric(crs) -> bool:
    """Projected, with both axes in metres."""
    return bool(crs is not None and crs.is_projected and all(a.unit_name in ("metre", "meter") for a in crs.axis_info[:2]))


@dataclass(frozen=True)
class BlockSize:
    """A spatial block size: degrees, or metres (`50km`, `5000m`)."""

    value: float
    metres: bool

    def __str__(self) -> str:
        if not self.metres:
            return f"{self.value:g} deg"
        return f"{self.value / 1000:g}km" if self.value >= 1000 else f"{self.value:g}m"

    def cell(self, lat: np.ndarray, crs=None) -> tuple[float, float, str]:
        """(width, height, unit) of a block: in the points' own metres when their CRS is metric, else
        in degrees; a size in metres then becomes that many metres of latitude, and of longitude at
        the points' mean latitude, so blocks are about square on the ground."""
        if not self.metres:
            return self.value, self.value, "degrees"
        if is_metric(crs):
            return self.value, self.value, f"metres in {crs.to_string()}"
        height = self.value / METRES_PER_DEGREE_LAT
        mean_lat = float(np.nanmean(lat)) if np.isfinite(lat).any() else 0.0
        width = height / max(np.cos(np.radians(mean_lat)), 0.01)
        return width, height, f"degrees ({self} at latitude {mean_lat:.1f})"


def parse_block_size(value) -> BlockSize:
    """`0.5` (degrees), `"0.5deg"`, `"50km"`, `"2000 m"`. Raises ValueError."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        size = BlockSize(float(value), False)
    else:
        match = _SIZE.match(str(value))
        if match is None:
            raise ValueError(f"{value!r}: give degrees (0.5) or a distance (50km, 2000m)")
        unit = (match["unit"] or "deg").lower()
        scale = {"km": 1000.0, "m": 1.0}.get(unit)
        size = BlockSize(float(match["value"]) * (scale or 1.0), scale is not None)
    if not size.value > 0:
        raise ValueError(f"{value!r}: a block size must be > 0")
    return size
