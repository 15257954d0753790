"""MIAM's imbalance coefficients: per-modality performance s_m, learning speed d_m, and r_m.

Once per evaluation (every epoch, or every k steps) the trainer scores the model with only modality
m visible on the validation split and calls ``ImbalanceMonitor.update`` with those scores and, for
each modality, every validation sample's influence on its score (``scoring.uncertainty``), from
which the standard error se_m of each s_m follows. Two monitors (``masking.monitor``):

**paper** — the paper's formulas, literally:

    k_m   = (s_m − c) / (1 − c)                     (skill above chance c; with chance=None, k_m = s_m)
    d_m   = |k_m(t) − k_m(t−1)|                     (or, with smoothing σ: σ·d_prev + (1−σ)·|Δk|)
    ρ_s,m = k⁺_m / geomean(k⁺)                       (k⁺ = k floored at SKILL_FLOOR, or SCORE_FLOOR if raw)
    ρ_d,m = (d_m + eps) / geomean(d + eps)           (eps: a plateau d = 0 cannot divide by zero)
    r_m   = ρ_s,m / ρ_d,m                            (high = strong and stable = mask more)

**noise-aware** — the same ratio, over the modalities learned beyond noise (L = {m : k_m > 2·se(k_m)};
the others keep r_m = 1), with a learning speed the validation set can vouch for:

    Δ_m   = (k_m(t) − k_m(t−h)) / h                 (h = min(window, evaluations so far))
    σΔ_m  = sqrt(Σ_i (ψ_m,i(t) − ψ_m,i(t−h))²) / ((1 − c)·h)
                                                    (paired SE: both scores come from the same samples)
    d_m   = max(|Δ_m| − z·σΔ_m, 0)                   (soft threshold: the change beyond noise)
    τ     = max(median_{m∈L} σΔ_m, eps)              (the resolution of this evaluation's speeds)
    ρ_s,m = k_m / geomean_{L}(k),  ρ_d,m = (d_m + τ) / geomean_{L}(d + τ)
    r*_m  = ρ_s,m / ρ_d,m
    log r_m(t) = log r_m(t−1) + clip(log r*_m − log r_m(t−1), −log β, log β)     (β = max_step)

Why: once the modalities plateau, |Δk| of the paper's monitor is the difference of two noisy
validation estimates, and eps (1e-4) is far below that noise, so ρ_d — and r — jumped by orders of
magnitude between evaluations (r 1.0 → 2.5 → 4.6 → 15.5 in the demo). The paired standard error
measures that noise exactly: the change a model's AUC shows on the validation samples when its
population AUC does not move. Subtracting it leaves d_m = 0 for a modality whose change is noise;
τ then puts every speed below resolution on the same footing, so ρ_d → 1 and r_m → ρ_s,m when
nothing is learning measurably (strong modalities are masked more, as the paper intends), while a
modality that still learns beyond noise keeps a small r. A modality at chance (a time series the model
has not learned) carries no evidence of strength or speed; left in the geometric means, its floored
skill inflated every other ρ_s, so on GeoPlant v3 a half-learned Sentinel-2 looked "strong" and was
masked more. The window h lets a slow, steady gain add
up over evaluations while the paired noise does not. The trust region bounds what one evaluation can
do to the masking distribution: r moves by at most a factor β per update.

Why skill and not the raw metric: ρ_s is a ratio, so the score needs a zero that means "no
performance". Macro AUC's is 0.5, not 0. With raw AUC a modality the model has not learned yet
scores ≈ 0.5, close to a learned one's 0.8, while its learning speed d_m is tiny; r_m = ρ_s/ρ_d is
then the largest of all, and MIAM masks the weakest modality *most*, the opposite of its purpose.
`masking.score: raw` restores the raw metric. SKILL_FLOOR keeps the geometric mean finite for a
modality at or below chance.

Before two evaluations exist there is no d: r_m = 1, and d, ρ_d are NaN in the record.
The record keeps the raw metric as s_m (with its standard error se_m) and the skill as k_m.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from miam_cli import plotstyle
from miam_cli.scoring.uncertainty import paired_standard_error, standard_error
from miam_cli.masking.strategies import SCORE_FLOOR

# 1% of the metric's range above chance: a modality at chance counts as a hundredth of a perfect one
SKILL_FLOOR = 0.01
# noise-aware monitor: a modality counts as learned when its skill is this many standard errors above chance
CHANCE_Z = 2.0
MONITORS = ("paper", "noise-aware")


def _geomean(x: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in x) / len(x))


class ImbalanceMonitor:
    """Tracks s_m (± se_m), d_m, ρ_s,m, ρ_d,m and r_m across evaluations; ``ratios`` feeds ``Miam.update``."""

    def __init__(self, modality_names: Sequence[str], eps: float = 1e-4, smoothing: float = 0.0,
                 chance: float | None = None, mode: str = "paper", window: int = 2, z: float = 1.0,
                 max_step: float = 2.0):
        if not modality_names or len(set(modality_names)) != len(modality_names):
            raise ValueError(f"modality_names must be non-empty and unique, got {list(modality_names)}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if chance is not None and not 0.0 <= chance < 1.0:
            raise ValueError(f"chance must be in [0, 1) or None, got {chance}")
        if mode not in MONITORS:
            raise ValueError(f"mode must be one of {MONITORS}, got {mode!r}")
        if not (isinstance(window, int) and window >= 1) or not z >= 0 or not max_step > 1.0:
            raise ValueError(f"need window >= 1, z >= 0, max_step > 1; got {window}, {z}, {max_step}")
        self.chance = None if chance is None else float(chance)
        self.names = list(modality_names)
        self.eps = float(eps)
        self.smoothing = float(smoothing)
        self.mode, self.window, self.z, self.max_step = mode, int(window), float(z), float(max_step)
        self._prev_s: list[float] | None = None
        self._prev_d: list[float] | None = None
        self._history: list[tuple[list[float], np.ndarray]] = []  # noise-aware: (k, ψ [M, N]) of past evaluations
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

    def _as_influence(self, influence) -> np.ndarray | None:
        if influence is None:
            if self.mode == "noise-aware":
                raise ValueError("the noise-aware monitor needs each score's per-sample influence")
            return None
        psi = np.asarray(influence, dtype=np.float64)
        if psi.ndim != 2 or psi.shape[0] != len(self.names) or not np.isfinite(psi).all():
            raise ValueError(f"influence: expected finite [{len(self.names)}, N], got shape {psi.shape}")
        if self._history and self._history[-1][1].shape != psi.shape:
            raise ValueError(f"influence covers {psi.shape[1]} samples, the previous evaluation "
                             f"{self._history[-1][1].shape[1]}: the monitor needs the same samples every time")
        return psi

    def update(self, scores: Mapping[str, float] | torch.Tensor | Sequence[float], influence=None) -> dict[str, float]:
        """Add one evaluation's per-modality scores (and their influence vectors [M, N]); returns its record.

        The returned dict is the one stored in ``.records``: the trainer may add keys to it
        (`epoch`, `p_<m>`) so that the record is a full metrics.csv row.
        """
        s = self._as_list(scores)
        psi = self._as_influence(influence)
        k = self.skill(s)
        se = [math.nan] * len(s) if psi is None else [standard_error(row) for row in psi]
        nan = [math.nan] * len(s)
        if self.mode == "paper":
            rho_s = self._rho_s(k, range(len(k)))
            d = rho_d = None
            extra: dict[str, list[float]] = {}
            if self._prev_s is not None:
                d, rho_d = self._paper_speed(k)
                self._ratios = [a / b for a, b in zip(rho_s, rho_d)]
        else:
            rho_s, d, rho_d, extra = self._noise_aware(k, se, psi)
        self._prev_s = s
        if psi is not None and self.mode == "noise-aware":
            self._history = [*self._history, (k, psi)][-self.window:]
        record: dict[str, float] = {}
        columns = (("s", s), ("se", se), ("k", k), *extra.items(), ("d", d or nan), ("rho_s", rho_s), ("rho_d", rho_d or nan),
                   ("r", self._ratios))
        for key, values in columns:
            record.update({f"{key}_{n}": float(v) for n, v in zip(self.names, values)})
        self.records.append(record)
        return record

    def _paper_speed(self, k: list[float]) -> tuple[list[float], list[float]]:
        step = [abs(a - b) for a, b in zip(k, self.skill(self._prev_s))]
        d = self._smooth(step)
        g_d = _geomean([v + self.eps for v in d])
        return d, [(v + self.eps) / g_d for v in d]

    def _rho_s(self, k: list[float], members) -> list[float]:
        """ρ_s over `members` (the others NaN): floored skill over its geometric mean."""
        floor = SCORE_FLOOR if self.chance is None else SKILL_FLOOR
        k_pos = {m: max(k[m], floor) for m in members}
        g_s = _geomean(list(k_pos.values())) if k_pos else math.nan
        return [k_pos[m] / g_s if m in k_pos else math.nan for m in range(len(k))]

    def _noise_aware(self, k: list[float], se: list[float], psi: np.ndarray):
        """(ρ_s, d, ρ_d, extra record columns); updates r_m from the second evaluation on.

        Only modalities learned beyond noise (k_m > CHANCE_Z·se_k) take part: one the validation set
        cannot tell from chance carries no evidence of strength or speed. Left in, its floored skill
        sinks the geometric mean and inflates every other ρ_s (a dead time series made a half-learned
        Sentinel-2 look "strong"); left out, it keeps r = 1.
        """
        scale = 1.0 if self.chance is None else 1.0 - self.chance
        learned = [m for m in range(len(k)) if k[m] > CHANCE_Z * se[m] / scale]
        rho_s = self._rho_s(k, learned)
        nan = [math.nan] * len(k)
        extra = {"learned": [float(m in learned) for m in range(len(k))]}
        if not self._history:
            return rho_s, nan, nan, extra
        k_old, psi_old = self._history[0]
        h = len(self._history)
        delta = [(a - b) / h for a, b in zip(k, k_old)]
        se_delta = [paired_standard_error(psi[m], psi_old[m]) / (scale * h) for m in range(len(k))]
        d = self._smooth([max(abs(x) - self.z * e, 0.0) for x, e in zip(delta, se_delta)])
        extra.update(delta=delta, se_delta=se_delta)
        if len(learned) < 2:  # nothing to balance
            self._ratios = self._trust_region([1.0] * len(k))
            return rho_s, d, nan, extra
        tau = max(float(np.median([se_delta[m] for m in learned])), self.eps)
        g_d = _geomean([d[m] + tau for m in learned])
        rho_d = [(d[m] + tau) / g_d if m in learned else math.nan for m in range(len(k))]
        target = [rho_s[m] / rho_d[m] if m in learned else 1.0 for m in range(len(k))]
        self._ratios = self._trust_region(target)
        return rho_s, d, rho_d, extra

    def _smooth(self, step: list[float]) -> list[float]:
        d = step if self._prev_d is None else [self.smoothing * p + (1.0 - self.smoothing) * x
                                               for p, x in zip(self._prev_d, step)]
        self._prev_d = d
        return d

    def _trust_region(self, target: list[float]) -> list[float]:
        """Move each log r towards log r* by at most log(max_step)."""
        bound = math.log(self.max_step)
        out = []
        for old, new in zip(self._ratios, target):
            step = min(max(math.log(new) - math.log(old), -bound), bound)
            out.append(old * math.exp(step))
        return out

    def skill(self, s: list[float]) -> list[float]:
        """k_m: the score above chance on the metric's [chance, 1] range (the raw score with chance=None).
        Not floored: d_m is the true change; only ρ_s floors it, as a geometric mean needs positive numbers."""
        if self.chance is None:
            return list(s)
        return [(v - self.chance) / (1.0 - self.chance) for v in s]

    def state_dict(self) -> dict:
        """Plain python data and tensors (loadable with torch.load(weights_only=True))."""
        return {
            "names": list(self.names),
            "eps": self.eps,
            "smoothing": self.smoothing,
            "chance": self.chance,
            "mode": self.mode, "window": self.window, "z": self.z, "max_step": self.max_step,
            "prev_s": None if self._prev_s is None else list(self._prev_s),
            "prev_d": None if self._prev_d is None else list(self._prev_d),
            "history": [(list(kk), torch.from_numpy(p.copy())) for kk, p in self._history],
            "ratios": list(self._ratios),
            "records": [dict(r) for r in self.records],
        }

    def load_state_dict(self, state: dict) -> None:
        if list(state["names"]) != self.names:
            raise ValueError(f"monitor state is for modalities {state['names']}, not {self.names}")
        if state.get("mode", "paper") != self.mode:
            raise ValueError(f"monitor state is from the {state.get('mode', 'paper')!r} monitor, not {self.mode!r}")
        self.eps, self.smoothing = float(state["eps"]), float(state["smoothing"])
        self.chance = state.get("chance")  # absent in checkpoints written before skill scores: raw
        self.window = int(state.get("window", self.window))
        self.z, self.max_step = float(state.get("z", self.z)), float(state.get("max_step", self.max_step))
        self._prev_s = None if state["prev_s"] is None else [float(v) for v in state["prev_s"]]
        self._prev_d = None if state["prev_d"] is None else [float(v) for v in state["prev_d"]]
        self._history = [([float(v) for v in kk], torch.as_tensor(p).numpy().astype(np.float64))
                         for kk, p in state.get("history", [])]
        self._ratios = [float(v) for v in state["ratios"]]
        self.records = [dict(r) for r in state["records"]]


def _sparse_log_label(v: float, _pos=None) -> str:
    """Minor ticks of a log axis labelled at 2, 3 and 5 per decade only (0.9 beside 1 would collide)."""
    if v <= 0:
        return ""
    lead = v / 10 ** math.floor(math.log10(v))
    return f"{v:g}" if round(lead, 6) in (2.0, 3.0, 5.0) else ""


@plotstyle.styled
def plot_imbalance(records: list[dict], modality_names: Sequence[str], out_png: str | Path, subtitle: str = "",
                   plot_format: str = "png") -> Path:
    """Four stacked panels over evaluations, one colour per modality:

    1. s_m, the validation score with only m visible, with its 95% band (± 1.96 se_m) where recorded;
    2. the learning speed d_m, and (noise-aware monitor) the noise it had to beat, σΔ_m, dashed;
    3. r_m on a log scale (1 = balanced);
    4. the mean masking rate p_m, and dotted, the share of training samples that saw m alone.

    The x axis is the records' `epoch` key where present, else 1, 2, …. `subtitle`: which run,
    strategy and split (`plotstyle.context`). Written with the house style (`plotstyle`).
    """
    from matplotlib.ticker import FuncFormatter

    x = np.array([r.get("epoch", i + 1) for i, r in enumerate(records)], dtype=float)
    fig = plotstyle.new_figure(7.5, 10)
    axes = fig.subplots(4, 1, sharex=True)
    colours = [f"C{i % 10}" for i in range(len(modality_names))]

    def series(key: str, name: str) -> np.ndarray:
        return np.array([float(r.get(f"{key}_{name}", math.nan)) for r in records])

    ylabels = ("validation score s_m\n(only m visible)", "learning speed d_m\n(skill per evaluation)",
               "imbalance ratio r_m\n(log scale; >1: masked more)", "share of training samples")
    drawn = [False] * 4
    for name, colour in zip(modality_names, colours):
        s, se = series("s", name), series("se", name)
        if np.isfinite(s).any():
            axes[0].plot(x, s, marker=".", color=colour, label=name)
            if np.isfinite(se).any():
                axes[0].fill_between(x, s - 1.96 * se, s + 1.96 * se, color=colour, alpha=0.2, linewidth=0)
            drawn[0] = True
        d, noise = series("d", name), series("se_delta", name)
        if np.isfinite(d).any():
            axes[1].plot(x, d, marker=".", color=colour, label=name)
            drawn[1] = True
        if np.isfinite(noise).any():
            axes[1].plot(x, noise, linestyle="--", color=colour, linewidth=1, label=f"{name}: noise σΔ")
        r = series("r", name)
        if np.isfinite(r).any():
            axes[2].plot(x, r, marker=".", color=colour, label=name)
            drawn[2] = True
        p, alone = series("p", name), series("alone", name)
        if np.isfinite(p).any():
            axes[3].plot(x, p, marker=".", color=colour, label=f"{name}: mean masking rate p_m")
            drawn[3] = True
        if np.isfinite(alone).any():
            axes[3].plot(x, alone, linestyle=":", marker="x", color=colour, label=f"{name}: seen alone")
            drawn[3] = True
    if drawn[2]:
        axes[2].set_yscale("log")
        axes[2].axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        axes[2].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.3, 1, 6 rather than 3×10⁻¹
        axes[2].yaxis.set_minor_formatter(FuncFormatter(_sparse_log_label))
    for ax, label, ok in zip(axes, ylabels, drawn):
        ax.set_ylabel(label)
        if not ok:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
    axes[0].legend(loc="best", fontsize="small", title="band: 95% interval", title_fontsize="small")
    if drawn[1]:
        axes[1].legend(loc="best", fontsize="x-small", ncol=2)
    if drawn[3]:
        axes[3].set_ylim(0.0, 1.0)
        axes[3].legend(loc="best", fontsize="x-small", ncol=2)
    axes[-1].set_xlabel("epoch")
    if len(x) and np.all(np.isfinite(x)) and np.allclose(x, np.round(x)):
        plotstyle.integer_axis(axes[-1].xaxis)
    plotstyle.set_titles(fig, "MIAM's imbalance monitor", subtitle)
    return plotstyle.save_figure(fig, out_png, plot_format)
