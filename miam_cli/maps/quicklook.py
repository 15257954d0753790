"""A PNG quick-look of a map GeoTIFF: chosen bands side by side, nodata in grey, coverage as categories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from miam_cli.errors import UserError
from miam_cli.store.atomic import atomic_write


def quicklook(tif: Path, png: Path, bands: list[str] | None = None, title: str | None = None, max_pixels: int = 512) -> Path:
    """Render `bands` (band descriptions; default: every band) of `tif`, decimated to at most `max_pixels` a side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio

    with rasterio.open(tif) as src:
        names = list(src.descriptions)
        chosen = bands or names
        unknown = [b for b in chosen if b not in names]
        if unknown:
            raise UserError(f"{tif}: no band {unknown[0]!r} (bands: {', '.join(map(str, names))})")
        step = max(1, int(np.ceil(max(src.width, src.height) / max_pixels)))
        shape = (int(np.ceil(src.height / step)), int(np.ceil(src.width / step)))
        data = {b: src.read(names.index(b) + 1, out_shape=shape, resampling=rasterio.enums.Resampling.nearest) for b in chosen}
        bits = json.loads(src.tags().get("coverage_bits", "{}"))
        extent = (src.bounds.left, src.bounds.right, src.bounds.bottom, src.bounds.top)
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.6 * len(chosen), 3.4), layout="constrained", squeeze=False)
    for ax, b in zip(axes[0], chosen):
        _panel(fig, ax, b, data[b], bits, extent)
    if title:
        fig.suptitle(title)
    atomic_write(png, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return png


def _panel(fig, ax, name: str, values: np.ndarray, bits: dict, extent) -> None:
    import matplotlib.pyplot as plt

    ax.set_facecolor("0.85")  # nodata
    masked = np.ma.masked_invalid(values)
    if name == "coverage":
        labels = {v: "+".join(g for g, bit in bits.items() if int(v) & bit) for v in np.unique(masked.compressed())}
        cmap = plt.get_cmap("tab10", max(len(labels), 1))
        codes = {v: i for i, v in enumerate(sorted(labels))}
        im = ax.imshow(np.ma.masked_invalid(np.vectorize(lambda v: codes.get(v, np.nan))(values)), cmap=cmap, extent=extent,
                       vmin=-0.5, vmax=len(labels) - 0.5, interpolation="nearest")
        bar = fig.colorbar(im, ax=ax, shrink=0.8, ticks=range(len(labels)))
        bar.ax.set_yticklabels([labels[v] for v in sorted(labels)])
    elif name.startswith("shapley("):
        limit = float(np.abs(masked).max()) if masked.count() else 1.0
        im = ax.imshow(masked, cmap="RdBu_r", vmin=-limit, vmax=limit, extent=extent, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8)
    else:
        im = ax.imshow(masked, cmap="viridis", extent=extent, interpolation="nearest",
                       vmin=0 if name.startswith("p(") else None, vmax=1 if name.startswith("p(") else None)
        fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(name, fontsize=10)
    ax.tick_params(labelsize=7)
