"""Masking strategies: distributions on the hypercube [0,1]^M.

Every strategy draws, per sample, a vector p = (p_1 … p_M) of per-modality masking probabilities;
``miam_cli.masking.keep.build_keep`` then masks each token of modality m with probability p_m.
The math, and why: docs/architecture.md, "Masking".

All randomness comes from the ``torch.Generator`` passed to ``sample`` (draws are made on the
generator's device), so a fixed generator seed gives the same draws. Rejection loops redraw only
the rejected rows, which keeps them deterministic for a given seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from miam_cli.errors import UserError

# Scores at or below zero (possible for some metrics) would make OPM's ratios s_m / s_j meaningless.
SCORE_FLOOR = 1e-6
# Rejection loops stop after this many rounds and fall back (see _redraw_all_masked).
_MAX_ROUNDS = 100


def _rand(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else "cpu"
    return torch.rand(shape, generator=generator, device=device)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else "cpu"
    return torch.randn(shape, generator=generator, device=device)


# ---------------------------------------------------------------------------------------------
# parameters


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


@dataclass(frozen=True)
class Param:
    """One tunable strategy parameter: its default, its bounds and what it does.

    The single source of the parameter: recipe validation (`miam_cli.recipe.MaskingSection`) builds
    its fields from these, so a new strategy or parameter touches this file only.
    """

    default: float
    description: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    alias: str | None = None  # the recipe key, where it differs (lam is written `lambda`)

    def check(self, x: float) -> bool:
        return ((self.ge is None or x >= self.ge) and (self.gt is None or x > self.gt)
                and (self.le is None or x <= self.le) and (self.lt is None or x < self.lt))

    @property
    def rule(self) -> str:
        low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None
        high = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f"{'>=' if self.ge is not None else '>'} {low[1:]}"
        return f"{'<=' if self.le is not None else '<'} {high[:-1]}" if high else "a number"


# ---------------------------------------------------------------------------------------------
# base


class MaskingStrategy:
    """Base class. Subclasses set ``name``, ``params`` and implement ``_sample``."""

    name: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    is_adaptive: ClassVar[bool] = False
    # corner_only: p ∈ {0,1}^M. Attribution warns that token-level coalitions are then off-distribution.
    corner_only: ClassVar[bool] = False
    partial_masking: ClassVar[bool] = True

    def __init__(self, num_modalities: int, **params: Any):
        if isinstance(num_modalities, bool) or not isinstance(num_modalities, int) or num_modalities < 1:
            raise UserError(
                f"masking: the number of modalities must be an integer >= 1, got {num_modalities!r}"
            )
        self.num_modalities = num_modalities
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            accepted = ", ".join(self.params) or "none"
            raise UserError(
                f"masking: strategy '{self.name}' has no parameter {', '.join(map(repr, unknown))} "
                f"(accepted: {accepted})"
            )
        self.values: dict[str, float] = {}
        for key, spec in self.params.items():
            raw = params.get(key, spec.default)
            value = _number(raw)
            if value is None or not spec.check(value):
                raise UserError(f"masking.{key} for strategy '{self.name}' must be {spec.rule}, got {raw!r}")
            self.values[key] = value
        self._check_params()

    @classmethod
    def check_values(cls, values: dict[str, float]) -> None:
        """Cross-parameter checks that need no data (recipe validation runs them too); UserError."""

    def _check_params(self) -> None:
        """Checks once the number of modalities is known; override where needed."""
        self.check_values(self.values)

    def sample(self, batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
        """Draw p, float32 [batch_size, M] in [0,1], on the generator's device."""
        return self._sample(int(batch_size), generator).to(torch.float32).clamp(0.0, 1.0)

    def _sample(self, batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def update(self, ratios: torch.Tensor | None = None, scores: torch.Tensor | None = None) -> None:
        """Adaptive strategies only (miam takes ratios, opm takes scores); a no-op otherwise."""

    def state_dict(self) -> dict:
        return {"name": self.name, "num_modalities": self.num_modalities, "params": dict(self.values)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name or state.get("num_modalities") != self.num_modalities:
            raise UserError(
                f"masking state is for strategy '{state.get('name')}' with {state.get('num_modalities')} "
                f"modalities, but this run uses '{self.name}' with {self.num_modalities}"
            )

    def __repr__(self) -> str:
        args = "".join(f", {k}={v:g}" for k, v in self.values.items())
        return f"{type(self).__name__}(name={self.name!r}, M={self.num_modalities}{args})"


def _as_vector(x: Any, m: int, what: str) -> torch.Tensor:
    """A finite float64 CPU vector of length m (adaptive state is kept on CPU, tiny)."""
    t = torch.as_tensor(x, dtype=torch.float64).detach().cpu().reshape(-1)
    if t.numel() != m:
        raise ValueError(f"{what}: expected {m} values (one per modality), got {t.numel()}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what}: values must be finite, got {t.tolist()}")
    return t


# ---------------------------------------------------------------------------------------------
# simple strategies


class Constant(MaskingStrategy):
    name = "constant"
    params = {"value": Param(0.75, "constant: masking probability", ge=0.0, le=1.0)}

    def _sample(self, batch_size, generator):
        device = generator.device if generator is not None else "cpu"
        return torch.full((batch_size, self.num_modalities), self.values["value"], device=device)


class Uniform(MaskingStrategy):
    """MaskSDM: one p ~ U(0,1) per sample, shared by all its modalities."""

    name = "uniform"

    def _sample(self, batch_size, generator):
        return _rand((batch_size, 1), generator).expand(batch_size, self.num_modalities).contiguous()


class UniformCube(MaskingStrategy):
    """p_m ~ U(0,1) independently: full support, no corner priority."""

    name = "uniform-cube"

    def _sample(self, batch_size, generator):
        return _rand((batch_size, self.num_modalities), generator)


# ---------------------------------------------------------------------------------------------
# dirichlet


def log_gamma_sample(alpha: float, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """log of Gamma(alpha, 1) draws (Marsaglia–Tsang), float64.

    torch.distributions cannot take a generator, hence this. For alpha < 1 we use
    G(alpha) = G(alpha + 1) · U^(1/alpha), kept in log space so small alphas do not underflow to 0.
    """
    a = alpha + 1.0 if alpha < 1.0 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(shape, dtype=torch.float64, device=generator.device if generator is not None else "cpu")
    flat = out.view(-1)
    pending = torch.arange(flat.numel(), device=flat.device)
    while pending.numel():  # acceptance rate > 95%: a handful of rounds
        n = pending.numel()
        x = _randn((n,), generator).double()
        u = _rand((n,), generator).double()
        v = (1.0 + c * x) ** 3
        ok = v > 0
        logv = torch.log(torch.where(ok, v, torch.ones_like(v)))
        ok &= torch.log(u) < 0.5 * x * x + d - d * v + d * logv
        flat[pending[ok]] = math.log(d) + logv[ok]
        pending = pending[~ok]
    if alpha < 1.0:
        out += torch.log(_rand(shape, generator).double()) / alpha
    return out


class Dirichlet(MaskingStrategy):
    """4M-style: keep fractions λ ~ Dir(α·1_M), p_m = 1 − λ_m (visible ratio near 1/M)."""

    name = "dirichlet"
    params = {"alpha": Param(1.0, "dirichlet: concentration", gt=0.0, le=1000.0)}

    def _sample(self, batch_size, generator):
        logg = log_gamma_sample(self.values["alpha"], (batch_size, self.num_modalities), generator)
        keep_fraction = torch.softmax(logg, dim=1)  # normalised gammas, computed stably in log space
        return 1.0 - keep_fraction


# ---------------------------------------------------------------------------------------------
# corner-only strategies (dropout, opm)


def _redraw_all_masked(drop_prob: torch.Tensor, batch_size: int, generator) -> torch.Tensor:
    """Corners c ∈ {0,1}^M with c_m ~ Bernoulli(drop_prob_m), all-masked rows redrawn.

    If a row is still all-masked after _MAX_ROUNDS redraws (only when Π drop_prob ≈ 1), one of
    the modalities with the lowest drop probability is kept, chosen uniformly at random.
    """
    m = drop_prob.numel()
    drop_prob = drop_prob.to(device=generator.device if generator is not None else "cpu", dtype=torch.float32)
    corners = _rand((batch_size, m), generator) < drop_prob
    for _ in range(_MAX_ROUNDS):
        bad = corners.all(dim=1).nonzero().squeeze(1)
        if bad.numel() == 0:
            return corners.float()
        corners[bad] = _rand((bad.numel(), m), generator) < drop_prob
    bad = corners.all(dim=1).nonzero().squeeze(1)
    if bad.numel():
        lowest = (drop_prob == drop_prob.min()).float().expand(bad.numel(), m)
        pick = torch.multinomial(lowest, 1, generator=generator).squeeze(1)
        corners[bad, pick] = False
    return corners.float()


class Dropout(MaskingStrategy):
    """Modality dropout: each modality masked whole with probability q; all-masked redrawn."""

    name = "dropout"
    params = {"q": Param(0.5, "dropout: probability of masking a whole modality", ge=0.0, lt=1.0)}
    corner_only = True
    partial_masking = False

    def _sample(self, batch_size, generator):
        return _redraw_all_masked(torch.full((self.num_modalities,), self.values["q"]), batch_size, generator)


class OPM(MaskingStrategy):
    """On-the-fly prediction modulation: drop dominant modalities whole.

    c_m = mean_{j≠m} s_m / s_j from the per-modality scores given to ``update(scores=...)``
    (clamped at SCORE_FLOOR, so scores ≤ 0 are allowed). Drop probability
    0.5·(1 + 0.5·tanh(c_m − 1)) where c_m > 1, else 0: a dominated modality is never dropped.
    Before any scores every c_m = 1, so nothing is dropped.
    """

    name = "opm"
    is_adaptive = True
    corner_only = True
    partial_masking = False

    def __init__(self, num_modalities: int, **params: Any):
        super().__init__(num_modalities, **params)
        self.scores: torch.Tensor | None = None

    def update(self, ratios=None, scores=None) -> None:
        if scores is None:
            raise ValueError("opm.update needs scores=[s_1 … s_M] (per-modality validation scores)")
        self.scores = _as_vector(scores, self.num_modalities, "opm scores")

    def drop_probabilities(self) -> torch.Tensor:
        m = self.num_modalities
        if self.scores is None or m == 1:
            return torch.zeros(m, dtype=torch.float64)
        s = self.scores.clamp(min=SCORE_FLOOR)
        inv = 1.0 / s
        c = s * (inv.sum() - inv) / (m - 1)  # mean over j ≠ m of s_m / s_j
        return torch.where(c > 1.0, 0.5 * (1.0 + 0.5 * torch.tanh(c - 1.0)), torch.zeros_like(c))

    def _sample(self, batch_size, generator):
        return _redraw_all_masked(self.drop_probabilities(), batch_size, generator)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "scores": None if self.scores is None else self.scores.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        s = state.get("scores")
        self.scores = None if s is None else _as_vector(s, self.num_modalities, "opm scores")


# ---------------------------------------------------------------------------------------------
# MixProdBeta (beta-cube, miam)


def sample_corners(batch_size: int, m: int, w0: float, w1: float, generator) -> torch.Tensor:
    """Corners [B, M] bool: all-False w.p. w0, all-True w.p. w1, else one of the 2^M − 2 others uniformly.

    The other corners are drawn as M fair coins with all-0 / all-1 rows rejected and redrawn:
    O(M) per sample, never O(2^M). With M = 1 there are no other corners, so w0 and w1 are
    renormalised to sum to 1.
    """
    u = _rand((batch_size,), generator)
    bits = _rand((batch_size, m), generator) < 0.5
    if m == 1:
        return (u >= w0 / (w0 + w1)).unsqueeze(1)
    mixed = u >= w0 + w1
    for _ in range(10_000):  # each round rejects a row with prob 2^(1−M) ≤ 1/2
        bad = (mixed & (bits.all(dim=1) | ~bits.any(dim=1))).nonzero().squeeze(1)
        if bad.numel() == 0:
            break
        bits[bad] = _rand((bad.numel(), m), generator) < 0.5
    bits[u < w0] = False
    bits[(u >= w0) & ~mixed] = True
    return bits


class MixProdBeta(MaskingStrategy):
    """beta-cube: corner-anchored mixture of product Betas (static, all r_m = 1).

    A corner c is drawn first (see sample_corners), then p_m ~ Beta(1, κ·r_m^(−λ)) where c_m = 0 and
    p_m ~ Beta(κ_m·r_m^(+λ), 1) where c_m = 1, by their closed-form inverse CDFs
    (Beta(1,b): 1 − (1−u)^(1/b); Beta(a,1): u^(1/a)), one uniform per entry. The random numbers
    drawn do not depend on r, so MIAM with λ = 0 gives exactly beta-cube's draws for the same seed.
    For beta-cube r stays 1, so ``lam`` has no effect there.

    κ_m = κ (the paper) unless ``kappa_per_token`` = g > 0, then κ_m = max(κ, g·T_m) for a modality of
    T_m tokens. Why: at a masked end every token is masked with probability p ~ Beta(a, 1), so the whole
    modality is masked with probability E[p^T] = a/(a + T). With the paper's κ = 10, tabular's 58
    tokens are all masked in only 15% of its masked corners, so "Sentinel-2 alone" — the input the weak
    modality has to learn from — is a 0.25% event. g = 1 makes every masked corner hide the whole
    modality at least half of the time, for any token count, and still leaves full support.
    """

    name = "beta-cube"
    params = {
        "kappa": Param(10.0, "MixProdBeta sharpness", gt=0.0, le=1000.0),
        "lam": Param(1.0, "MIAM imbalance strength", ge=0.0, le=10.0, alias="lambda"),
        "w0": Param(0.25, "weight of the all-visible corner", ge=0.0, le=1.0),
        "w1": Param(0.25, "weight of the all-masked corner", ge=0.0, le=1.0),
        "kappa_per_token": Param(0.0, "masked-end sharpness at least this times the modality's token count "
                                      "(0: the paper's kappa for all)", ge=0.0, le=100.0),
    }

    def __init__(self, num_modalities: int, tokens: list[int] | None = None, **params: Any):
        super().__init__(num_modalities, **params)
        self.ratios = torch.ones(num_modalities, dtype=torch.float64)
        if tokens is not None and (len(tokens) != num_modalities or min(tokens) < 1):
            raise ValueError(f"tokens: expected {num_modalities} counts >= 1, got {tokens}")
        per_token = self.values["kappa_per_token"]
        if per_token > 0 and tokens is None:
            raise UserError("masking.kappa_per_token needs the number of tokens of each modality")
        t = torch.tensor(tokens if tokens is not None else [0] * num_modalities, dtype=torch.float64)
        self.kappa_masked = torch.clamp(per_token * t, min=self.values["kappa"])  # κ_m at the masked end

    @classmethod
    def check_values(cls, values: dict[str, float]) -> None:
        w = values["w0"] + values["w1"]
        if w > 1.0 + 1e-12:
            raise UserError(f"masking.w0 + masking.w1 must be <= 1, got {w:g}")

    def _check_params(self) -> None:
        self.check_values(self.values)
        if self.num_modalities == 1 and self.values["w0"] + self.values["w1"] <= 0.0:
            raise UserError("masking.w0 + masking.w1 must be > 0 with a single modality")

    def _sample(self, batch_size, generator):
        v = self.values
        corners = sample_corners(batch_size, self.num_modalities, v["w0"], v["w1"], generator)
        u = _rand((batch_size, self.num_modalities), generator).double()
        tilt = self.ratios.to(u.device) ** v["lam"]  # r^λ: > 1 pushes a dominant modality towards p = 1
        a, b = self.kappa_masked.to(u.device) * tilt, v["kappa"] / tilt
        near_one = torch.exp(torch.log(u) / a)  # Beta(a, 1)
        near_zero = -torch.expm1(torch.log1p(-u) / b)  # Beta(1, b), accurate for tiny p
        return torch.where(corners, near_one, near_zero)


class Miam(MixProdBeta):
    """MIAM: MixProdBeta whose r_m come from ImbalanceMonitor via ``update(ratios=r)``."""

    name = "miam"
    is_adaptive = True

    def update(self, ratios=None, scores=None) -> None:
        if ratios is None:
            raise ValueError("miam.update needs ratios=[r_1 … r_M] (from ImbalanceMonitor.ratios)")
        r = _as_vector(ratios, self.num_modalities, "miam ratios")
        if (r <= 0).any():
            raise ValueError(f"miam ratios must be > 0, got {r.tolist()}")
        self.ratios = r

    def state_dict(self) -> dict:
        return {**super().state_dict(), "ratios": self.ratios.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.update(ratios=state["ratios"])


# ---------------------------------------------------------------------------------------------
# registry

STRATEGIES: dict[str, type[MaskingStrategy]] = {
    cls.name: cls for cls in (Constant, Uniform, Dirichlet, Dropout, OPM, UniformCube, MixProdBeta, Miam)
}


def make_strategy(name: str, num_modalities: int, tokens: list[int] | None = None, **params: Any) -> MaskingStrategy:
    """Build a strategy by name; UserError for an unknown name or a bad parameter. `tokens`: each
    modality's token count (used by MixProdBeta's ``kappa_per_token``; ignored by the others)."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise UserError(f"masking: unknown strategy {name!r} (valid: {', '.join(STRATEGIES)})")
    if issubclass(cls, MixProdBeta):
        return cls(num_modalities, tokens=tokens, **params)
    return cls(num_modalities, **params)
