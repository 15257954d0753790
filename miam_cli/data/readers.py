"""Shared decoding helpers: every way a raw input becomes tokens `[T, F]` plus validity `[T]`.

Dataset adapters (GeoPlant, TaxaBench, custom dataset specs) are assembled from these pieces, so a
format is decoded, and a bad input recorded, the same way whichever adapter meets it:

- images (PIL formats or GeoTIFF; one file or several stacked as bands) -> band x sub-patch tokens;
- audio (soundfile; PyAV when installed, for what libsndfile cannot read) -> log-mel frames pooled
  into time tokens;
- rasters sampled at points (with CRS reprojection; nodata -> invalid) or cut into windows around them;
- a global `[H, W, C]` grid indexed by lon/lat (the SINR/TaxaBind environmental raster);
- a multi-scale sinusoidal encoding of lon/lat;
- precomputed embedding files (`.pt`, `.npz`, `.npy` + ids sidecar, Parquet).

An adapter describes each modality by a *source*: a `TableSource` when the tokens of every sample
are computed up front (tables, points sampled in rasters, cubes, embeddings), or a `FileSource` when
each sample has its own input decoded in the (possibly parallel) chunk loop. `SourceDecoder` turns
a dict of sources into the picklable `decode(rows) -> ChunkData` that `run_prepare` expects. A bad
input raises `Fault` (or any exception, read as a corrupt file): that sample's modality is marked
missing and the fault recorded, and `--strict` turns faults into exit 2 (in `run_prepare`).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from miam_cli.data.confine import Confinement
from miam_cli.errors import UserError
from miam_cli.store.writer import ChunkData

__all__ = [
    "Fault", "TableSource", "FileSource", "SourceDecoder", "ImageReader", "ArrayReader", "AudioReader",
    "RasterWindowReader", "LogMelParams", "EmbeddingTable", "id_text", "patch_tokens", "square_resize",
    "load_bands", "read_audio", "resample", "mel_filterbank", "log_mel_tokens", "grid_index", "grid_lookup",
    "location_encoding", "raster_points", "raster_pixels", "read_embeddings", "embedding_source",
    "grid_names", "AUDIO_SUFFIXES", "IMAGE_SUFFIXES", "ARRAY_SUFFIXES", "check_confined", "read_csv_table", "require_files",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".aiff", ".aif"}
ARRAY_SUFFIXES = {".npy", ".pt"}
SNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}  # what libsndfile is meant to read


# ================================================================ faults and sources
class Fault(Exception):
    """One sample's input for one modality is unusable: the modality is marked missing for that sample."""

    def __init__(self, kind: str, file: str | Path | None, detail: str):
        super().__init__(detail)
        self.kind, self.file, self.detail = kind, (str(file) if file is not None else None), detail

    def __reduce__(self):  # faults found at plan time travel to spawned workers inside a TableSource
        return Fault, (self.kind, self.file, self.detail)

    @classmethod
    def corrupt(cls, file: str | Path | None, error: Exception) -> "Fault":
        """Any decoder's error: the input is corrupt for our purposes."""
        return cls("corrupt_file", file, f"{type(error).__name__}: {error}"[:200])

    def record(self, sample: str, modality: str) -> dict:
        return {"kind": self.kind, "file": self.file, "sample": sample, "modality": modality, "detail": self.detail}


class Reader(Protocol):
    shape: tuple[int, int]  # (tokens, features)

    def __call__(self, key) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class TableSource:
    """Tokens of every sample computed up front; faults found then are emitted with their row's chunk."""

    values: np.ndarray  # [N, T, F]
    valid: np.ndarray  # [N, T] bool
    faults: dict[int, list[Fault]] = field(default_factory=dict)  # row -> its faults (a table may have several per row)

    def read(self, rows: range, sample_ids: list[str], modality: str):
        sl = slice(rows.start, rows.stop)
        faults = [f.record(sample_ids[r], modality) for r in rows for f in self.faults.get(r, ())]
        return self.values[sl].astype(np.float32), self.valid[sl].copy(), faults


@dataclass
class FileSource:
    """Each sample's own input (a path, several paths, a pixel position) decoded by `reader`; paths
    outside `confine`'s root are `outside_root` faults and never opened (see `miam_cli.data.confine`)."""

    keys: Sequence  # per sample: what `reader` takes
    reader: Reader
    confine: Confinement | None = None

    def read(self, rows: range, sample_ids: list[str], modality: str):
        T, F = self.reader.shape
        values, valid, faults = np.zeros((len(rows), T, F), np.float32), np.zeros((len(rows), T), bool), []
        if hasattr(self.reader, "read_many"):  # readers that can read many keys' inputs at once
            many = self.reader.read_many([self.keys[r] for r in rows])
            if many is not None:
                return many[0], many[1], []
        for j, r in enumerate(rows):
            try:
                check_confined(self.confine, self.keys[r])
                tokens, ok = self.reader(self.keys[r])
                if tokens.shape != (T, F):
                    raise Fault("wrong_shape", _first_path(self.keys[r]), f"tokens {list(tokens.shape)}, expected {[T, F]}")
            except Fault as f:
                faults.append(f.record(sample_ids[r], modality))
                continue
            except Exception as e:  # any decoder error
                faults.append(Fault.corrupt(_first_path(self.keys[r]), e).record(sample_ids[r], modality))
                continue
            values[j], valid[j] = np.where(ok[:, None], tokens, 0.0), ok
        return values, valid, faults


@dataclass
class SourceDecoder:
    """Picklable `decode(rows) -> ChunkData` over per-modality sources (runs in spawned workers)."""

    sample_ids: list[str]
    sources: dict[str, TableSource | FileSource]

    def __call__(self, rows: range) -> ChunkData:
        values, valid, faults = {}, {}, []
        for m, source in self.sources.items():
            values[m], valid[m], found = source.read(rows, self.sample_ids, m)
            faults += found
        return ChunkData(values, valid, faults)


def check_confined(confine: Confinement | None, key) -> None:
    """Raise an `outside_root` Fault when a path of `key` resolves outside the confinement's root."""
    if confine is None:
        return
    for p in key if isinstance(key, (list, tuple)) else [key]:
        if isinstance(p, (str, Path)):
            reason = confine.why_not(p)
            if reason:
                raise Fault("outside_root", p, reason)


def _paths(key) -> list[Path]:
    return [Path(p) for p in (key if isinstance(key, (list, tuple)) else [key])]


def _first_path(key) -> str | None:
    """The file a fault is about (None when the key is not a path, e.g. a raster window's pixel)."""
    first = key[0] if isinstance(key, (list, tuple)) and key else key
    return str(first) if isinstance(first, (str, Path)) else None


def require_files(paths: list[Path], detail: str = "file expected for this sample but absent") -> None:
    """A `missing_file` Fault for the first of `paths` that is not a file (`detail`: how the adapter knew of it)."""
    for p in paths:
        if not p.is_file():
            raise Fault("missing_file", p, detail)


# ================================================================ ids and tables
def read_csv_table(path: Path, **kwargs) -> "pd.DataFrame":
    """A CSV table (separator sniffed for small files unless `kwargs` say how to read it); unreadable
    (empty, not text, not CSV) is a UserError naming the file and never quoting it."""
    import pandas as pd

    try:
        if kwargs:
            return pd.read_csv(path, **kwargs)
        return pd.read_csv(path, sep=None, engine="python") if path.stat().st_size < 1 << 20 else pd.read_csv(path)
    except (ValueError, csv.Error, OSError) as e:  # pandas' parser and empty-data errors, UTF-8 errors are ValueErrors
        raise UserError(f"{path}: cannot read CSV ({type(e).__name__}{_position(e)})") from None


def _position(e: Exception) -> str:
    """Where a parser stopped ("line 7"), without the text it found there."""
    m = re.search(r"line \d+", str(e))
    return f" at {m.group(0)}" if m else ""


def id_text(v) -> str:
    """Survey/species ids arrive as int, float (`6310.0`) or string; normalise to the integer text."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    s = str(v).strip()
    return s[:-2] if s.endswith(".0") else s


# ================================================================ images -> band x sub-patch tokens
def grid_names(grid: int) -> list[str]:
    return [f"r{r}c{c}" for r in range(grid) for c in range(grid)]


_PIL_NATURAL = {"1": "L", "P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "RGBX": "RGB"}


def load_bands(paths: list[Path], mode: str | Sequence[str] | None = None) -> np.ndarray:
    """[C, H, W] float32: the files' bands stacked in order (GeoTIFF via rasterio, the rest via PIL).

    `mode` ("RGB", "L") converts a PIL image first, e.g. so that a grayscale photo still gives 3 bands;
    a sequence gives each file its own (GLC24's patches: ("RGB", "L") for the RGB and the NIR JPEG).
    PIL images otherwise keep their natural bands and depth (L, I;16, F -> 1, RGB -> 3, RGBA -> 4);
    modes numpy cannot take as they are (bilevel, palette, CMYK, ...) are converted first.
    """
    modes = [mode] * len(paths) if mode is None or isinstance(mode, str) else list(mode)
    layers = []
    for p, want in zip(paths, modes):
        if p.suffix.lower() in (".tif", ".tiff"):
            import rasterio

            with rasterio.open(p) as src:
                layers.append(src.read().astype(np.float32))
            continue
        from PIL import Image

        with Image.open(p) as im:
            target = want or _PIL_NATURAL.get(im.mode)
            a = np.asarray(im.convert(target) if target and target != im.mode else im, dtype=np.float32)
        layers.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    shapes = {layer.shape[1:] for layer in layers}
    if len(shapes) > 1:
        raise Fault("wrong_shape", paths[0], f"the files of one sample differ in size: {sorted(shapes)}")
    return np.concatenate(layers, 0)


def patch_tokens(image: np.ndarray, grid: int) -> np.ndarray:
    """[..., B, H, W] -> [..., B * grid * grid, (H/grid) * (W/grid)]: token = band * grid^2 + row * grid + col.

    Leading axes (several images at once) are kept.
    """
    *lead, b, h, w = image.shape
    sh, sw = h // grid, w // grid
    x = image[..., : sh * grid, : sw * grid].reshape(*lead, b, grid, sh, grid, sw).swapaxes(-3, -2)
    return x.reshape(*lead, b * grid * grid, sh * sw)


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop [C, H, W] to a square, then bilinear-resize each band to size x size.

    Cropping (not squashing) keeps the photo's proportions: a species seen in a landscape photo keeps
    its shape, and the centre, where photographers put the subject, is what is kept.
    """
    c, h, w = image.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    image = image[:, top : top + s, left : left + s]
    if s == size:
        return image
    from PIL import Image

    # mode F (float32) per band: no clipping or rounding to 8 bits, whatever the bands hold
    return np.stack([np.asarray(Image.fromarray(b).resize((size, size), Image.BILINEAR)) for b in image.astype(np.float32)])


@dataclass(frozen=True)
class ImageReader:
    """One sample's image file(s) -> [bands * grid^2, (size/grid)^2]; token = band * grid^2 + row * grid + col."""

    bands: tuple[str, ...]
    size: int
    grid: int
    mode: str | None = None

    def __post_init__(self):
        if self.size % self.grid:
            raise UserError(f"grid {self.grid} must divide the image size {self.size}")

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.bands) * self.grid**2, (self.size // self.grid) ** 2

    def __call__(self, key):
        paths = _paths(key)
        require_files(paths)
        image = load_bands(paths, self.mode)
        if image.shape[0] != len(self.bands):
            raise Fault("wrong_shape", paths[0], f"{image.shape[0]} band(s), expected {len(self.bands)} ({', '.join(self.bands)})")
        tokens = patch_tokens(square_resize(image, self.size), self.grid)
        return tokens, np.ones(len(tokens), bool)


@dataclass(frozen=True)
class ArrayReader:
    """A `.npy`/`.pt` cube -> tokens along `token_axis`, features = the other axes flattened (C order)."""

    array_shape: tuple[int, ...]
    token_axis: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        t = self.array_shape[self.token_axis]
        return t, int(np.prod(self.array_shape)) // max(t, 1)

    def __call__(self, key):
        path = _paths(key)[0]
        require_files([path])
        cube = load_array(path)
        if cube.shape != tuple(self.array_shape):
            raise Fault("wrong_shape", path, f"shape {list(cube.shape)}, expected {list(self.array_shape)}")
        # NaN stays in: the store writer marks those tokens missing and counts them (as for GeoPlant cubes)
        return np.moveaxis(cube, self.token_axis, 0).reshape(self.shape), np.ones(self.shape[0], bool)


def load_array(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".pt":
        import torch

        # non-contiguous views (as the GeoPlant cubes are saved) need .contiguous() before numpy
        return torch.load(path, map_location="cpu", weights_only=True).contiguous().numpy().astype(np.float32)
    return np.load(path, allow_pickle=False).astype(np.float32)


# ================================================================ rasters
def _to_crs(src, x, y, crs: str = "EPSG:4326") -> tuple[np.ndarray, np.ndarray]:
    """Points given in `crs` (default WGS84 lon/lat) in the raster's CRS, in one transform (none when
    the CRSs are the same); a raster without a CRS is taken to be in the points' CRS."""
    from rasterio.crs import CRS

    x, y = np.asarray(x, float), np.asarray(y, float)
    if src.crs is None or src.crs == CRS.from_user_input(crs):
        return x, y
    from rasterio.warp import transform

    xs, ys = transform(CRS.from_user_input(crs), src.crs, x.tolist(), y.tolist())
    return np.asarray(xs), np.asarray(ys)


# Points (or windows) close together are read as one block rather than one read each: a map's tile, or
# a chunk of dense points, costs one read. Scattered points over a large raster fall back to reads per point.
BLOCK_PIXELS = 1 << 22


def read_block(src, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels [C, height, width] from (row, col), which may reach past the raster, and which are unusable:
    nodata (or the raster's mask), NaN, or outside the raster, as a boundless masked read (but one read,
    without the warped VRT a boundless read builds)."""
    from rasterio.windows import Window

    values = np.zeros((src.count, height, width), np.float32)
    bad = np.ones((src.count, height, width), bool)
    r0, r1 = max(row, 0), min(row + height, src.height)
    c0, c1 = max(col, 0), min(col + width, src.width)
    if r0 < r1 and c0 < c1:
        data = src.read(window=Window(c0, r0, c1 - c0, r1 - r0), masked=True)
        inner = np.ma.getdata(data).astype(np.float32)
        values[:, r0 - row : r1 - row, c0 - col : c1 - col] = inner
        bad[:, r0 - row : r1 - row, c0 - col : c1 - col] = np.ma.getmaskarray(data) | ~np.isfinite(inner)
    return np.where(bad, 0.0, values).astype(np.float32), bad


def raster_points(path: Path, x, y, crs: str = "EPSG:4326") -> tuple[np.ndarray, np.ndarray]:
    """Every band sampled at the points (given in `crs`): values float32 [N, bands], valid [N, bands].

    Invalid: the raster's nodata (or its mask), NaN, and points outside the raster.
    """
    import rasterio
    from rasterio.transform import rowcol

    with rasterio.open(path) as src:
        xs, ys = _to_crs(src, x, y, crs)
        if len(xs) == 0:
            return np.zeros((0, src.count), np.float32), np.zeros((0, src.count), bool)
        rows, cols = (np.asarray(a, np.int64) for a in rowcol(src.transform, xs, ys))
        r0, c0 = max(int(rows.min()), 0), max(int(cols.min()), 0)
        h, w = min(int(rows.max()) + 1, src.height) - r0, min(int(cols.max()) + 1, src.width) - c0
        if h <= 0 or w <= 0:  # every point beyond one edge (both negative would pass a test on h * w)
            return np.zeros((len(xs), src.count), np.float32), np.zeros((len(xs), src.count), bool)
        if h * w <= BLOCK_PIXELS:
            values, bad = read_block(src, r0, c0, h, w)
            inside = (rows >= r0) & (rows < r0 + h) & (cols >= c0) & (cols < c0 + w)
            r, c = np.where(inside, rows - r0, 0), np.where(inside, cols - c0, 0)
            valid = ~bad[:, r, c].T & inside[:, None]
            return np.where(valid, values[:, r, c].T, 0.0).astype(np.float32), valid
        sampled = np.ma.stack([np.ma.asarray(v) for v in src.sample(zip(xs, ys), masked=True)])
    values = np.ma.getdata(sampled).astype(np.float32)
    valid = ~np.ma.getmaskarray(sampled) & np.isfinite(values)
    return np.where(valid, values, 0.0).astype(np.float32), valid


def raster_pixels(path: Path, x, y, crs: str = "EPSG:4326") -> tuple[np.ndarray, np.ndarray, int, list[str]]:
    """(rows, cols) of the points' pixels (may lie outside the raster), band count, band names."""
    import rasterio
    from rasterio.transform import rowcol

    with rasterio.open(path) as src:
        xs, ys = _to_crs(src, x, y, crs)
        rows, cols = rowcol(src.transform, xs, ys) if len(xs) else ([], [])
        names = [d or f"b{i + 1}" for i, d in enumerate(src.descriptions)]
        return np.asarray(rows, np.int64), np.asarray(cols, np.int64), src.count, names


@dataclass
class RasterWindowReader:
    """A size x size window centred on a pixel -> band x sub-patch tokens.

    A token is valid only if every pixel of its sub-patch is (not nodata, inside the raster): a value
    averaged over a half-empty window would be a different quantity from a full one.
    """

    path: str
    bands: tuple[str, ...]
    size: int
    grid: int
    _src: object = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.size % self.grid:
            raise UserError(f"grid {self.grid} must divide the window size {self.size}")

    def __getstate__(self):  # an open dataset handle does not cross process boundaries
        return {**self.__dict__, "_src": None}

    def _open(self):
        if self._src is None:
            import rasterio

            self._src = rasterio.open(self.path)
        return self._src

    def read_many(self, keys: list) -> tuple[np.ndarray, np.ndarray] | None:
        """Tokens [n, T, F] and validity [n, T] of every key's window, cut from one block read (a map tile, dense
        points); None when the block would be too large (scattered points): then each window is read alone."""
        block = self._covering_block(keys)
        if block is None:
            return None
        r0, c0, values, bad = block
        rows = np.asarray([int(k[0]) for k in keys]) - self.size // 2 - r0
        cols = np.asarray([int(k[1]) for k in keys]) - self.size // 2 - c0
        shape = (self.size, self.size)
        windows = np.lib.stride_tricks.sliding_window_view(values, shape, axis=(1, 2))[:, rows, cols].swapaxes(0, 1)
        masks = np.lib.stride_tricks.sliding_window_view(bad, shape, axis=(1, 2))[:, rows, cols].swapaxes(0, 1)
        valid = ~patch_tokens(masks, self.grid).any(axis=-1)
        return np.where(valid[..., None], patch_tokens(windows, self.grid), 0.0).astype(np.float32), valid

    def _covering_block(self, keys: list) -> tuple | None:
        """(row, col, values, bad) of the block covering every window of `keys`, when it is small enough to read."""
        if not keys:
            return None
        rows, cols = np.asarray([k[0] for k in keys]), np.asarray([k[1] for k in keys])
        half = self.size // 2
        r0, c0 = int(rows.min()) - half, int(cols.min()) - half
        h, w = int(rows.max()) - half + self.size - r0, int(cols.max()) - half + self.size - c0
        return (r0, c0, *read_block(self._open(), r0, c0, h, w)) if h * w <= BLOCK_PIXELS else None

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.bands) * self.grid**2, (self.size // self.grid) ** 2

    def __call__(self, key):
        values, bad = read_block(self._open(), int(key[0]) - self.size // 2, int(key[1]) - self.size // 2, self.size, self.size)
        return patch_tokens(values, self.grid), ~patch_tokens(bad, self.grid).any(axis=1)


def grid_index(lon, lat, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell of a global equirectangular grid: row = int((90 - lat) H / 180), col = int((lon + 180) W / 360).

    The SINR/TaxaBind convention (row 0 at the north pole, col 0 at the antimeridian); lat = -90 and
    lon = 180 would fall one past the edge and are clipped onto it.
    """
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    rows = np.floor((90.0 - lat) * height / 180.0).astype(np.int64)
    cols = np.floor((lon + 180.0) * width / 360.0).astype(np.int64)
    return np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)


def grid_lookup(raster: np.ndarray, lon, lat) -> np.ndarray:
    """Values [N, C] of an [H, W, C] grid (a memory map is fine: only the N cells are read)."""
    rows, cols = grid_index(lon, lat, raster.shape[0], raster.shape[1])
    return np.asarray(raster[rows, cols], dtype=np.float32)


# ================================================================ location
def location_encoding(lon, lat, scales: int = 8) -> np.ndarray:
    """[N, 4 * scales]: sin/cos of 2^k * lon and 2^k * lat (radians), k = 0..scales-1, scale-major.

    Feature 4k + (0, 1, 2, 3) = sin(2^k λ), cos(2^k λ), sin(2^k φ), cos(2^k φ). Scale 0 is smooth over
    the globe (and continuous across the antimeridian); scale k resolves about 180 / 2^k degrees.
    """
    lam = np.radians(np.asarray(lon, float))[:, None] * 2.0 ** np.arange(scales)
    phi = np.radians(np.asarray(lat, float))[:, None] * 2.0 ** np.arange(scales)
    return np.stack([np.sin(lam), np.cos(lam), np.sin(phi), np.cos(phi)], axis=-1).reshape(len(lam), 4 * scales).astype(np.float32)


# ================================================================ audio -> log-mel time tokens
@dataclass(frozen=True)
class LogMelParams:
    """Log-mel spectrogram parameters (defaults: 25 ms Hann windows every 10 ms at 16 kHz, 32 HTK mels).

    The first `seconds` of the clip are kept, resampled to `sample_rate`, framed (no centre padding:
    frame i covers samples [i*hop, i*hop + win)), windowed with a periodic Hann window zero-padded to
    `n_fft`, turned into a power spectrum |X|^2 and projected on `n_mels` triangular filters spaced
    evenly on the HTK mel scale m = 2595 log10(1 + f/700) between `fmin` and `fmax` (peak 1, no area
    normalisation). The clip is cut into `tokens` equal time segments; token t = log(mean mel power of
    the frames starting in segment t + eps). A segment without a whole frame (clip shorter than
    `seconds`) is an invalid token.
    """

    sample_rate: int = 16000
    seconds: float = 5.0
    tokens: int = 10
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 32
    fmin: float = 50.0
    fmax: float = 8000.0
    eps: float = 1e-6

    def time_axis(self) -> list[str]:
        step = self.seconds / self.tokens
        return [f"{t * step:g}s" for t in range(self.tokens)]


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, float) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, float) / 2595.0) - 1.0)


def mel_filterbank(p: LogMelParams) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters (HTK mel scale, peak 1)."""
    fmax = min(p.fmax, p.sample_rate / 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(p.fmin), _hz_to_mel(fmax), p.n_mels + 2))
    freqs = np.arange(p.n_fft // 2 + 1) * p.sample_rate / p.n_fft
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0.0, None)


def resample(signal: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling by truncating or zero-padding the spectrum (exact for periodic signals)."""
    if rate == target or len(signal) == 0:
        return signal.astype(np.float32)
    n_out = int(round(len(signal) * target / rate))
    spectrum = np.fft.rfft(signal)
    keep = min(len(spectrum), n_out // 2 + 1)
    out = np.zeros(n_out // 2 + 1, complex)
    out[:keep] = spectrum[:keep]
    return (np.fft.irfft(out, n_out) * n_out / len(signal)).astype(np.float32)


def log_mel_tokens(signal: np.ndarray, rate: int, p: LogMelParams) -> tuple[np.ndarray, np.ndarray]:
    """Mono signal -> tokens float32 [p.tokens, p.n_mels], valid [p.tokens] (see `LogMelParams`)."""
    x = resample(np.asarray(signal, np.float32)[: int(round(p.seconds * rate))], rate, p.sample_rate)
    tokens, valid = np.zeros((p.tokens, p.n_mels), np.float32), np.zeros(p.tokens, bool)
    if len(x) < p.win_length:
        return tokens, valid
    frames = np.lib.stride_tricks.sliding_window_view(x, p.win_length)[:: p.hop_length]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(p.win_length) / p.win_length)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, n=p.n_fft, axis=1)) ** 2
    mel = power @ mel_filterbank(p).T  # [frames, n_mels]
    segment = p.seconds * p.sample_rate / p.tokens  # samples per token
    which = np.floor(np.arange(len(frames)) * p.hop_length / segment).astype(np.int64)
    keep = which < p.tokens
    sums = np.zeros((p.tokens, p.n_mels))
    np.add.at(sums, which[keep], mel[keep])
    counts = np.bincount(which[keep], minlength=p.tokens)
    valid = counts > 0
    tokens[valid] = np.log(sums[valid] / counts[valid, None] + p.eps)
    return tokens, valid


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """(mono float32 signal, sample rate): soundfile (WAV, FLAC, OGG, MP3...), then PyAV if installed.

    A file neither can decode is a fault: `corrupt_file` for a format libsndfile reads (the file is
    broken), `unreadable_audio` for the others (e.g. `.m4a` when PyAV is not installed).
    """
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return data.mean(axis=1), int(rate)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        first = f"libsndfile: {e}"
    kind = "corrupt_file" if Path(path).suffix.lower() in SNDFILE_SUFFIXES else "unreadable_audio"
    try:
        import av  # noqa: F401
    except ImportError:
        hint = "" if kind == "corrupt_file" else "; install PyAV (pip install av) to decode this format"
        raise Fault(kind, path, f"{first}{hint}"[:300]) from None
    try:
        return _read_with_pyav(path)
    except Exception as e:
        raise Fault(kind, path, f"{first}; PyAV: {type(e).__name__}: {e}"[:300]) from None


def _read_with_pyav(path: Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with PyAV (FFmpeg), converted to planar float mono at its own rate."""
    import av

    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == "audio")
        rate = int(stream.codec_context.sample_rate or stream.rate)
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
        parts = []
        for frame in container.decode(stream):
            parts += [f.to_ndarray()[0] for f in resampler.resample(frame)]
        parts += [f.to_ndarray()[0] for f in resampler.resample(None)]
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)).astype(np.float32), rate


@dataclass(frozen=True)
class AudioReader:
    params: LogMelParams = LogMelParams()

    @property
    def shape(self) -> tuple[int, int]:
        return self.params.tokens, self.params.n_mels

    def __call__(self, key):
        path = _paths(key)[0]
        require_files([path])
        signal, rate = read_audio(path)
        return log_mel_tokens(signal, rate, self.params)


# ================================================================ precomputed embeddings
@dataclass
class EmbeddingTable:
    """Vectors keyed by sample id: modality -> float32 [n, D] (a row of NaN = no vector for that id)."""

    ids: list[str]
    vectors: dict[str, np.ndarray]
    file: str


_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def read_embeddings(spec: str | Path, id_column: str = "id") -> EmbeddingTable:
    """Read one embedding file. `NAME=FILE` names the modality of a single-array file (default: its stem).

    - `.pt`: a dict {modality: tensor [N, D], ..., "ids": list or 1-D tensor} (or {"embeddings": {...}, "ids"});
    - `.npz`: arrays per modality plus an `ids` array;
    - `.npy`: one [N, D] array, ids in a sidecar `<stem>.ids.txt` / `<stem>_ids.txt` (one per line) or `.ids.npy`;
    - `.parquet`: column `id_column` plus one list column per modality.
    """
    text = str(spec)
    named = "=" in text and not Path(text).exists() and _NAME.match(text.partition("=")[0])
    name, _, file = text.partition("=") if named else ("", "", text)
    path = Path(file)
    if not path.is_file():
        raise UserError(f"{path}: no such embeddings file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            ids, vectors = _embeddings_parquet(path, id_column)
        elif suffix in (".pt", ".npz"):
            ids, vectors = _embeddings_dict(path)
        elif suffix == ".npy":
            ids, vectors = _sidecar_ids(path), {name or path.stem: np.load(path, allow_pickle=False)}
        else:
            raise UserError(f"{path}: embeddings must be .pt, .npz, .npy (+ ids sidecar) or .parquet")
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path}: cannot read embeddings: {type(e).__name__}: {e}") from None
    if name and len(vectors) == 1:
        vectors = {name: next(iter(vectors.values()))}
    return _check_table(EmbeddingTable([id_text(i) for i in ids], {m: np.asarray(v, np.float32) for m, v in vectors.items()}, str(path)))


def _embeddings_dict(path: Path):
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    else:
        import torch

        data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or "ids" not in data:
        raise UserError(f"{path}: expected a dict of modality -> [N, D] arrays with an 'ids' entry")
    ids = data.pop("ids")
    data = data.pop("embeddings") if isinstance(data.get("embeddings"), dict) else data
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    return ids, {m: (v.float().numpy() if hasattr(v, "numpy") and not isinstance(v, np.ndarray) else np.asarray(v)) for m, v in data.items()}


def _embeddings_parquet(path: Path, id_column: str):
    import pandas as pd

    table = pd.read_parquet(path)
    if id_column not in table.columns:
        raise UserError(f"{path}: no id column {id_column!r} (columns: {', '.join(map(str, table.columns))})")
    vectors = {}
    for col in table.columns.drop(id_column):
        cells = table[col].to_numpy()
        sizes = {len(c) for c in cells if c is not None and not (isinstance(c, float) and math.isnan(c))}
        if len(sizes) != 1:
            raise UserError(f"{path}: column {col!r} is not one fixed-length list per row (lengths {sorted(sizes)[:5]})")
        d = sizes.pop()
        vectors[col] = np.stack([np.full(d, np.nan) if c is None or isinstance(c, float) else np.asarray(c, float) for c in cells])
    return table[id_column].tolist(), vectors


def _sidecar_ids(path: Path) -> list:
    for candidate in (f"{path.stem}.ids.txt", f"{path.stem}_ids.txt", f"{path.stem}.ids.npy", f"{path.stem}_ids.npy"):
        side = path.with_name(candidate)
        if side.is_file():
            if side.suffix == ".npy":
                return np.load(side, allow_pickle=False).tolist()
            return [line.strip() for line in side.read_text().splitlines() if line.strip()]
    raise UserError(f"{path}: a .npy embedding needs its ids in {path.stem}.ids.txt (one id per line) beside it")


def _check_table(t: EmbeddingTable) -> EmbeddingTable:
    if len(set(t.ids)) != len(t.ids):
        raise UserError(f"{t.file}: duplicate ids in the embeddings")
    for m, v in t.vectors.items():
        if not _NAME.match(m):
            raise UserError(f"{t.file}: {m!r} is not a usable modality name (letters, digits, _ and -)")
        if v.ndim != 2 or len(v) != len(t.ids):
            raise UserError(f"{t.file}: {m} has shape {list(v.shape)}, expected [{len(t.ids)} ids, D]")
    return t


def embedding_source(table: EmbeddingTable, modality: str, sample_ids: list[str]) -> TableSource:
    """One token per sample; a sample absent from the file (or with a null vector) is missing, a fault."""
    vectors = table.vectors[modality]
    position = {i: k for k, i in enumerate(table.ids)}
    rows = np.array([position.get(s, -1) for s in sample_ids], dtype=np.int64)
    padded = np.concatenate([vectors, np.full((1, vectors.shape[1]), np.nan, np.float32)])  # row -1: absent id
    values = padded[rows]
    ok = np.isfinite(values).all(axis=1)
    faults = {r: [Fault("missing_embedding", table.file, "no vector for this id" if rows[r] < 0 else "null or NaN vector")]
              for r in np.flatnonzero(~ok)}
    return TableSource(np.where(ok[:, None], values, 0.0)[:, None, :].astype(np.float32), ok[:, None], faults)
