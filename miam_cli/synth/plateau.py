"""The plateau regime: small tabular modalities, a few thousand points, binary presence/background.

This is where MIAM's imbalance signal is noisiest (issue 13): every modality is a handful of
near-linear columns, so each one is learned within the first epoch or two, and from then on the
monitor's d_m = |Δs_m| is the difference of two noisy validation estimates. Real presence/background
SDM data prepared through `prepare custom` looked like this (four small tabular modalities, a few
thousand points; MIAM closed 30% of the weakest modality's gap).

``synth_plateau(out_dir, points=4000, seed=0)`` writes, for `miam prepare custom`:

    points.csv   id, lon, lat, presence (0/1), and the columns of four modalities:
                 climate  clim1..clim19  noisy linear views of two climate latents (dominant, redundant)
                 soil     soil1..soil4   a soil latent, partly moisture
                 topo     topo1..topo3   elevation (anti-correlated with temperature) and noise
                 cover    cover1..cover4 land cover: a temperature proxy as an angle (cos, sin), a habitat latent, noise
                                         (the weak modality, half redundant with climate)
    spec.yaml    the dataset spec (binary presence through `labels.presence`, spatial blocks)
    truth.json   the planted logit and which modality is the weak one

Presence has probability sigmoid(2·(2.0·temperature + 1.0·moisture + 0.8·soil + 1.2·habitat + ε − t)),
with t set for a 25% presence rate. Land cover carries the habitat (its own signal) and a proxy of
temperature (corr 0.9) that is not in the logit: beside the climate columns the proxy is worth
nothing, alone it stands in for temperature. A model that only ever learned land cover in the company
of climate under-uses the proxy when land cover is all there is: the gap MIAM has to close. Seeded numpy generators: the same arguments give the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from miam_cli.errors import UserError

GENERATOR_NAME = "miam synth plateau"
WEIGHTS = {"temperature": 2.0, "moisture": 1.0, "soil": 0.8, "habitat": 1.2}
PROXY_TEMPERATURE_CORR = 0.9
PROXY_ANGLE = 1.2  # radians per unit of the proxy: ±2.5 sd stays within ±3 rad
PRESENCE_RATE = 0.25
LOGIT_NOISE_SD = 0.5
# modality -> column -> (latent weights, noise sd)
COLUMNS: dict[str, dict[str, tuple[dict[str, float], float]]] = {
    "climate": {  # nineteen correlated bioclimatic-like columns: the dominant, highly redundant modality
        **{f"clim{i}": ({"temperature": 1.0 - 0.04 * i}, 0.3 + 0.04 * i) for i in range(1, 11)},
        **{f"clim{i}": ({"moisture": 1.0 - 0.04 * (i - 10), "temperature": 0.2}, 0.3 + 0.04 * (i - 10)) for i in range(11, 18)},
        "clim18": ({}, 1.0), "clim19": ({}, 1.0),
    },
    "soil": {
        "soil1": ({"soil": 1.0}, 0.4), "soil2": ({"soil": 0.6, "moisture": 0.5}, 0.5),
        "soil3": ({"soil": 0.5}, 0.8), "soil4": ({}, 1.0),
    },
    "topo": {"topo1": ({"temperature": -0.6}, 0.8), "topo2": ({}, 1.0), "topo3": ({}, 1.0)},
    # the proxy is read through an angle (cos, sin): decoding it takes two tokens together and a
    # non-linear map, so, like Sentinel-2's band ratio, it needs inputs where land cover is alone
    "cover": {"cover1": ({"proxy_cos": 1.0}, 0.15), "cover2": ({"proxy_sin": 1.0}, 0.15),
              "cover3": ({"habitat": 1.0}, 0.4), "cover4": ({}, 1.0)},
}
WEAK_MODALITY = "cover"


def synth_plateau(out_dir: Path | str, points: int = 4000, seed: int = 0) -> dict:
    """Write points.csv, spec.yaml and truth.json into `out_dir`; return a summary."""
    import pandas as pd

    if not isinstance(points, int) or points < 100:
        raise UserError(f"points must be an integer >= 100, got {points!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 13])
    lon, lat = rng.uniform(0.0, 10.0, points), rng.uniform(40.0, 48.0, points)
    latent = _latents(rng, lon, lat)
    logit = sum(w * latent[k] for k, w in WEIGHTS.items()) + rng.normal(0.0, LOGIT_NOISE_SD, points)
    threshold = np.quantile(logit, 1.0 - PRESENCE_RATE)
    presence = rng.random(points) < 1.0 / (1.0 + np.exp(-2.0 * (logit - threshold)))
    table = {"id": [f"p{i:05d}" for i in range(points)], "lon": lon.round(5), "lat": lat.round(5),
             "presence": presence.astype(int)}
    for columns in COLUMNS.values():
        for name, (weights, noise) in columns.items():
            x = sum(w * latent[k] for k, w in weights.items()) + noise * rng.standard_normal(points)
            table[name] = np.round(x, 4)
    pd.DataFrame(table).to_csv(out / "points.csv", index=False)
    (out / "spec.yaml").write_text(_spec())
    truth = {
        "generator": GENERATOR_NAME, "seed": seed, "points": points,
        "presence_rate": float(presence.mean()),
        "logit": {k: w for k, w in WEIGHTS.items()}, "logit_noise_sd": LOGIT_NOISE_SD,
        "proxy": f"{PROXY_TEMPERATURE_CORR}*temperature + {np.sqrt(1 - PROXY_TEMPERATURE_CORR ** 2):.3f}*noise (not in the logit)",
        "modalities": {m: {c: {"latents": w, "noise_sd": n} for c, (w, n) in cols.items()} for m, cols in COLUMNS.items()},
        "weak_modality": WEAK_MODALITY,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return {"out_dir": str(out), "points": points, "presence_rate": float(presence.mean()), "spec": str(out / "spec.yaml")}


def _latents(rng: np.random.Generator, lon: np.ndarray, lat: np.ndarray) -> dict[str, np.ndarray]:
    """Temperature and moisture vary smoothly in space (so spatial blocks matter); soil and the
    habitat's unique part are local."""
    n = len(lon)
    temperature = _standardise(np.sin(lon / 2.0) + 0.8 * np.cos(lat / 1.5) + 0.5 * rng.standard_normal(n))
    moisture = _standardise(np.cos(lon / 3.0 + lat / 2.5) + 0.6 * rng.standard_normal(n))
    soil = rng.standard_normal(n)
    habitat = rng.standard_normal(n)
    proxy = PROXY_TEMPERATURE_CORR * temperature + np.sqrt(1 - PROXY_TEMPERATURE_CORR ** 2) * rng.standard_normal(n)
    angle = PROXY_ANGLE * proxy
    return {"temperature": temperature, "moisture": moisture, "soil": soil, "habitat": habitat, "proxy": proxy,
            "proxy_cos": np.cos(angle), "proxy_sin": np.sin(angle)}


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


def _spec() -> str:
    lines = ["name: plateau", "points:", "  path: points.csv", "  id: id", "  lon: lon", "  lat: lat",
             "  labels:", "    presence: [presence]", "  split:", "    block_size: 0.5", "    seed: 0",
             "    fractions: [0.7, 0.15, 0.15]", "modalities:"]
    for modality, columns in COLUMNS.items():
        lines += [f"  {modality}:", "    kind: columns", f"    columns: [{', '.join(columns)}]"]
    return "\n".join(lines) + "\n"
