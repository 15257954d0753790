"""A quick-look of a map GeoTIFF: chosen bands side by side in the house style (`miam_cli.plotstyle`).

Probabilities on a fixed 0-1 sequential scale, Shapley bands on a diverging scale centred on zero,
coverage as categories named by the modalities visible; nodata in light grey. The subtitle names the
run the map came from (the GeoTIFF's `miam_run` tag).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from miam_cli.errors import UserError
from miam_cli.plotstyle import DIVERGING, SEQUENTIAL, context, new_figure, save_figure, set_titles, styled, symmetric_limit

NODATA_GREY = "0.88"


def quicklook(tif: Path, out: Path, bands: list[str] | None = None, title: str | None = None, fmt: str = "png",
              max_pixels: int = 512) -> Path:
    """Render `bands` (band descriptions; default: every band) of `tif`, decimated to at most `max_pixels` a side."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(tif) as src:
        names = list(src.descriptions)
        chosen = bands or names
        unknown = [b for b in chosen if b not in names]
        if unknown:
            raise UserError(f"{tif}: no band {unknown[0]!r} (bands: {', '.join(map(str, names))})")
        step = max(1, int(np.ceil(max(src.width, src.height) / max_pixels)))
        shape = (int(np.ceil(src.height / step)), int(np.ceil(src.width / step)))
        data = {b: src.read(names.index(b) + 1, out_shape=shape, resampling=Resampling.nearest) for b in chosen}
        tags = src.tags()
        extent = (src.bounds.left, src.bounds.right, src.bounds.bottom, src.bounds.top)
    fig = _figure(data, json.loads(tags.get("coverage_bits", "{}")), extent, title or Path(tif).name, tags.get("miam_run"))
    return save_figure(fig, out, fmt)


@styled
def _figure(data: dict[str, np.ndarray], bits: dict, extent, title: str, run: str | None):
    fig = new_figure(3.3 * len(data), 3.4)
    axes = fig.subplots(1, len(data), squeeze=False)[0]
    for ax, (name, values) in zip(axes, data.items()):
        ax.set_facecolor(NODATA_GREY)
        image = _draw(ax, name, values, bits, extent)
        bar = fig.colorbar(image, ax=ax, shrink=0.8)
        if name == "coverage":
            codes = _coverage_codes(values, bits)
            bar.set_ticks(range(len(codes)), labels=list(codes.values()))
        ax.set_title(name)
        ax.set_xlabel("x (lon)" if extent[1] <= 180 else "x")
        ax.set_ylabel("y (lat)" if extent[1] <= 180 else "y")
    set_titles(fig, title, context(run, extra=["grey: no modality has data"]) if run else "grey: no modality has data")
    return fig


def _draw(ax, name: str, values: np.ndarray, bits: dict, extent):
    masked = np.ma.masked_invalid(values)
    common = {"extent": extent, "interpolation": "nearest"}
    if name == "coverage":
        codes = _coverage_codes(values, bits)
        index = {v: i for i, v in enumerate(codes)}
        category = np.ma.masked_invalid(np.vectorize(lambda v: index.get(v, np.nan), otypes=[float])(values))
        return ax.imshow(category, cmap=_categories(len(codes)), vmin=-0.5, vmax=len(codes) - 0.5, **common)
    if name.startswith("shapley("):
        limit = symmetric_limit(values)
        return ax.imshow(masked, cmap=DIVERGING, vmin=-limit, vmax=limit, **common)
    probability = name.startswith("p(")
    return ax.imshow(masked, cmap=SEQUENTIAL, vmin=0 if probability else None, vmax=1 if probability else None, **common)


def _coverage_codes(values: np.ndarray, bits: dict) -> dict[float, str]:
    """Each coverage value present -> the modalities it says were visible (`env+sentinel2`)."""
    present = sorted(np.unique(values[np.isfinite(values)]).tolist())
    return {v: "+".join(g for g, bit in bits.items() if int(v) & bit) or "none" for v in present}


def _categories(n: int):
    from matplotlib.colors import ListedColormap

    return ListedColormap(["#66c2a5", "#fc8d62", "#8da0cb", "#e78ac3", "#a6d854", "#ffd92f", "#e5c494"][: max(n, 1)])
