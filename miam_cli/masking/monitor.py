"""MIAM's imbalance coefficients: per-modality performance s_m, learning speed d_m, and r_m.

Once per evaluation (every epoch, or every k steps) the trainer scores the model with only modality
m visible on the validation split and calls ``ImbalanceMonitor.update`` with those scores:

    k_m   = (s_m − c) / (1 − c)                     (skill above chance c; with chance=None, k_m = s_m)
    d_m   = |k_m(t) − k_m(t−1)|                     (or, with smoothing σ: σ·d_prev + (1−σ)·|Δk|)
    ρ_s,m = k⁺_m / geomean(k⁺)                       (k⁺ = k floored at SKILL_FLOOR, or SCORE_FLOOR if raw)
    ρ_d,m = (d_m + eps) / geomean(d + eps)           (eps: a plateau d = 0 cannot divide by zero)
    r_m   = ρ_s,m / ρ_d,m                            (high = strong and stable = mask more)

Why skill and not the raw metric: ρ_s is a ratio, so the score needs a zero that means "no
performance". Macro AUC's is 0.5, not 0. With raw AUC a modality the model has not learned yet
scores ≈ 0.5, close to a learned one's 0.8, while its learning speed d_m is tiny; r_m = ρ_s/ρ_d is
then the largest of all, and MIAM masks the weakest modality *most*, the opposite of its purpose.
The paper's formula is kept; only the score's origin moves to chance (`masking.score: raw` restores
the raw metric). SKILL_FLOOR keeps the geometric mean finite for a modality at or below chance.

Before two evaluations exist there is no d: r_m = 1, and d, ρ_d are NaN in the record.
The record keeps the raw metric as s_m and the skill as k_m.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from miam_cli.masking.strategies import SCORE_FLOOR

# 1% of the metric's range above chance: a modality at chance counts as a hundredth of a perfect one
SKILL_FLOOR = 0.01


def _geomean(x: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in x) / len(x))


class ImbalanceMonitor:
    """Tracks s_m, d_m, ρ_s,m, ρ_d,m and r_m across evaluations; ``ratios`` feeds ``Miam.update``."""

    def __init__(self, modality_names: Sequence[str], eps: float = 1e-4, smoothing: float = 0.0,
                 chance: float | None = None):
        if not modality_names or len(set(modality_names)) != len(modality_names):
            raise ValueError(f"modality_names must be non-empty and unique, got {list(modality_names)}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if chance is not None and not 0.0 <= chance < 1.0:
            raise ValueError(f"chance must be in [0, 1) or None, got {chance}")
        self.chance = None if chance is None else float(chance)
        self.names = list(modality_names)
        self.eps = float(eps)
        self.smoothing = float(smoothing)
        self._prev_s: list[float] | None = None
        self._prev_d: list[float] | None = None
        self._ratios = [1.0] * len(self.names)
        self.records: list[dict[str, float]] = []

    @property
    def ratios(self) -> torch.Tensor:
        """r_m, float32 [M] (all ones before two evaluations)."""
        return torch.tensor(self._ratios, dtype=torch.float32)

    def _as_list(self, scores: Mapping[str, float] | torch.Tensor | Sequence[float]) -> list[float]:
        if isinstance(scores, Mapping):
            missing = [n for n in self.names if n not in scores]
            extra = [k for k in scores if k not in self.names]
            if missing or extra:
                raise ValueError(f"scores: missing {missing}, unexpected {extra} (modalities: {self.names})")
            values = [float(scores[n]) for n in self.names]
        else:
            values = [float(v) for v in torch.as_tensor(scores, dtype=torch.float64).reshape(-1).tolist()]
            if len(values) != len(self.names):
                raise ValueError(f"scores: expected {len(self.names)} values, got {len(values)}")
        bad = [n for n, v in zip(self.names, values) if not math.isfinite(v)]
        if bad:
            raise ValueError(f"scores: not finite for modalities {bad}")
        return values

    def update(self, scores: Mapping[str, float] | torch.Tensor | Sequence[float]) -> dict[str, float]:
        """Add one evaluation's per-modality scores; returns its record.

        The returned dict is the one stored in ``.records``: the trainer may add keys to it
        (`epoch`, `p_<m>`) so that the record is a full metrics.csv row.
        """
        s = self._as_list(scores)
        k = self.skill(s)
        floor = SCORE_FLOOR if self.chance is None else SKILL_FLOOR
        k_pos = [max(v, floor) for v in k]
        g_s = _geomean(k_pos)
        rho_s = [v / g_s for v in k_pos]
        nan = [math.nan] * len(s)
        d, rho_d = nan, nan
        if self._prev_s is not None:
            step = [abs(a - b) for a, b in zip(k, self.skill(self._prev_s))]
            if self._prev_d is None:
                d = step  # first speed: nothing to smooth with yet
            else:
                d = [self.smoothing * p + (1.0 - self.smoothing) * x for p, x in zip(self._prev_d, step)]
            g_d = _geomean([v + self.eps for v in d])
            rho_d = [(v + self.eps) / g_d for v in d]
            self._ratios = [a / b for a, b in zip(rho_s, rho_d)]
            self._prev_d = d
        self._prev_s = s
        record: dict[str, float] = {}
        for key, values in (("s", s), ("k", k), ("d", d), ("rho_s", rho_s), ("rho_d", rho_d), ("r", self._ratios)):
            record.update({f"{key}_{n}": float(v) for n, v in zip(self.names, values)})
        self.records.append(record)
        return record

    def skill(self, s: list[float]) -> list[float]:
        """k_m: the score above chance on the metric's [chance, 1] range (the raw score with chance=None).
        Not floored: d_m is the true change; only ρ_s floors it, as a geometric mean needs positive numbers."""
        if self.chance is None:
            return list(s)
        return [(v - self.chance) / (1.0 - self.chance) for v in s]

    def state_dict(self) -> dict:
        """Plain python data (loadable with torch.load(weights_only=True))."""
        return {
            "names": list(self.names),
            "eps": self.eps,
            "smoothing": self.smoothing,
            "chance": self.chance,
            "prev_s": None if self._prev_s is None else list(self._prev_s),
            "prev_d": None if self._prev_d is None else list(self._prev_d),
            "ratios": list(self._ratios),
            "records": [dict(r) for r in self.records],
        }

    def load_state_dict(self, state: dict) -> None:
        if list(state["names"]) != self.names:
            raise ValueError(f"monitor state is for modalities {state['names']}, not {self.names}")
        self.eps, self.smoothing = float(state["eps"]), float(state["smoothing"])
        self.chance = state.get("chance")  # absent in checkpoints written before skill scores: raw
        self._prev_s = None if state["prev_s"] is None else [float(v) for v in state["prev_s"]]
        self._prev_d = None if state["prev_d"] is None else [float(v) for v in state["prev_d"]]
        self._ratios = [float(v) for v in state["ratios"]]
        self.records = [dict(r) for r in state["records"]]


def plot_imbalance(records: list[dict], modality_names: Sequence[str], out_png: str | Path) -> Path:
    """Four stacked panels over evaluations: s_m, d_m, r_m (log scale) and mean p_m (if `p_<m>` keys exist).

    The x axis is the records' `epoch` key where present, else 1, 2, …. Uses the Agg canvas directly
    (no pyplot), so it works headless and does not change matplotlib's global backend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_png = Path(out_png)
    x = [r.get("epoch", i + 1) for i, r in enumerate(records)]
    fig = Figure(figsize=(7, 9), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 1, sharex=True)
    panels = (("s", "score s_m"), ("d", "learning speed d_m"), ("r", "ratio r_m"), ("p", "mean mask p_m"))
    for ax, (key, title) in zip(axes, panels):
        drawn = False
        for name in modality_names:
            y = [r.get(f"{key}_{name}", math.nan) for r in records]
            if any(isinstance(v, (int, float)) and math.isfinite(v) for v in y):
                ax.plot(x, y, marker=".", label=name)
                drawn = True
        if key == "r" and drawn:
            ax.set_yscale("log")
            ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        if not drawn:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(title)
    axes[0].legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("epoch")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png
