"""Shapley estimators over a batched value function on coalitions.

The model is out of scope here: a caller supplies ``value_fn(coalitions) -> values`` where
``coalitions`` is a bool array [K, P] (True = player visible) and ``values`` is float [K]. Model
evaluations dominate the cost, so every estimator asks for coalitions in large batches, never
evaluates a coalition twice (``CoalitionCache``) and reports its cost in coalition evaluations.

- ``exact_shapley``: all 2^P coalitions in one call.
- ``shapley_from_subset_values``: exact values from a table that already exists (eval-subsets).
- ``PermutationSampler``: antithetic permutation sampling with standard errors, a tolerance and a
  budget; shards run disjoint pairs and ``merge`` pools them exactly.
- ``KernelSampler``: paired KernelSHAP (Covert & Lee, AISTATS 2021): coalitions drawn from the
  Shapley kernel together with their complements, Shapley values as the efficiency-constrained
  least-squares fit with one fixed effect per coalition size (which takes out how the value climbs
  with the number of visible players), standard errors from the pairs' residuals (sandwich). Same
  stopping rules, shards and merge. At equal evaluations its error is 0.45–0.70× the permutation
  sampler's on the games of ``benchmarks/attribution_bench.py`` and 0.2–0.6× captum's, so
  ``miam attribute`` samples with it by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import comb
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from miam_cli.errors import UserError

ValueFn = Callable[[np.ndarray], np.ndarray]

# 2^16 coalitions is already 65,536 model evaluations; beyond that sampling is the sane choice.
EXACT_MAX_PLAYERS = 16


class TooManyPlayersError(UserError, ValueError):
    """Exact Shapley was asked for more players than enumeration can afford."""


@dataclass(frozen=True)
class Tolerance:
    """When sampling stops early: once the largest standard error is at most ``value`` in the game's
    own units (AUC, top-1, minus the loss, a probability), or at most ``share`` × |v(all) − v(none)|,
    the total the players share, whichever of the two is larger. A threshold in units works whatever
    the size of the values (a Landsat year beside the other modalities moves AUC by ~1e-3, and a
    threshold tied to such values alone is never met); the share compares errors with what there is
    to divide, so a large effect is not measured to a precision nobody reads (Sentinel-2 patches on
    their own share 0.11 AUC: 2% of it is 0.0023, reached with a quarter of the evaluations 0.001
    needs). Zero for both never stops early: the budget decides."""

    value: float
    share: float = 0.0

    @classmethod
    def of(cls, tolerance: float | str | Tolerance) -> Tolerance:
        """A Tolerance from itself, a number (game units) or text: ``0.002``, ``5%`` (a share), or both
        joined by a comma, ``0.001,2%`` (whichever is larger)."""
        if isinstance(tolerance, Tolerance):
            return tolerance
        text = str(tolerance).strip()
        value = share = None
        for part in (p.strip() for p in text.split(",")):
            number = _tolerance_number(text, part.removesuffix("%"))
            if part.endswith("%") and share is None:
                share = number / 100
            elif not part.endswith("%") and value is None:
                value = number
            else:
                raise UserError(f"--tolerance {text!r}: at most one number and one percentage, e.g. 0.001,2%")
        return cls(value or 0.0, share or 0.0)

    @property
    def stops_early(self) -> bool:
        return self.value > 0 or self.share > 0

    def threshold(self, v_all: float, v_none: float) -> float:
        return max(self.value, self.share * abs(v_all - v_none))

    def met(self, std_errors: np.ndarray, v_all: float, v_none: float) -> bool:
        return (self.stops_early and bool(np.isfinite(std_errors).all())
                and float(std_errors.max()) <= self.threshold(v_all, v_none))

    def __str__(self) -> str:
        share = f"{100 * self.share:g}% of |v(all) - v(none)|"
        if self.value > 0 and self.share > 0:
            return f"{self.value:g} or {share}, whichever is larger"
        return share if self.share > 0 else f"{self.value:g}"


def _tolerance_number(text: str, part: str) -> float:
    try:
        number = float(part)
    except ValueError:
        raise UserError(f"--tolerance {text!r}: expected a number in the target's units (0.002), a percentage of "
                        "|v(all) - v(none)| (5%), or both (0.001,2%)") from None
    if not (number >= 0 and np.isfinite(number)):
        raise UserError(f"--tolerance {text!r}: must be 0 or more")
    return number


class CoalitionCache:
    """Wraps a value function: batches the coalitions it has not seen yet into one call and
    remembers every value, keyed by the coalition's packed bits."""

    def __init__(self, value_fn: ValueFn, num_players: int):
        self.value_fn = value_fn
        self.num_players = num_players
        self._values: dict[bytes, float] = {}
        self.calls = 0  # value_fn invocations
        self.evaluations = 0  # coalitions sent to value_fn (the cost)

    def __len__(self) -> int:
        return len(self._values)

    @property
    def complete(self) -> bool:
        """True once every one of the 2^P coalitions has a value."""
        return len(self._values) == 2**self.num_players

    @staticmethod
    def keys(coalitions: np.ndarray) -> list[bytes]:
        return [row.tobytes() for row in np.packbits(coalitions, axis=1)]

    def new_keys(self, keys: Iterable[bytes]) -> dict[bytes, int]:
        """Uncached keys, first occurrence only, mapped to their row index."""
        new: dict[bytes, int] = {}
        for row, key in enumerate(keys):
            if key not in self._values and key not in new:
                new[key] = row
        return new

    def values(self, coalitions: np.ndarray, keys: list[bytes] | None = None) -> np.ndarray:
        coalitions = np.asarray(coalitions, dtype=bool)
        keys = self.keys(coalitions) if keys is None else keys
        new = self.new_keys(keys)
        if new:
            self._store(new, coalitions[list(new.values())])
        return np.fromiter((self._values[k] for k in keys), dtype=np.float64, count=len(keys))

    def _store(self, new: dict[bytes, int], coalitions: np.ndarray) -> None:
        out = np.asarray(self.value_fn(coalitions), dtype=np.float64).reshape(-1)
        if out.shape[0] != coalitions.shape[0]:
            raise ValueError(
                f"value function returned {out.shape[0]} values for {coalitions.shape[0]} coalitions"
            )
        if not np.isfinite(out).all():  # a NaN would silently poison every estimate using it
            raise ValueError(f"value function returned {int((~np.isfinite(out)).sum())} non-finite values")
        self.calls += 1
        self.evaluations += coalitions.shape[0]
        self._values.update(zip(new, out.tolist()))


@dataclass
class ConvergenceTracker:
    """Per-player running mean and sum of squared deviations (Welford), updated a batch at a
    time and mergeable across shards with Chan et al.'s parallel formula."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, num_players: int) -> ConvergenceTracker:
        return cls(0, np.zeros(num_players), np.zeros(num_players))

    def update(self, samples: np.ndarray) -> None:
        """Add samples [n, P]; a batch is folded in as one more Welford state."""
        samples = np.asarray(samples, dtype=np.float64)
        mean = samples.mean(axis=0)
        batch = ConvergenceTracker(len(samples), mean, ((samples - mean) ** 2).sum(axis=0))
        self._absorb(batch)

    def _absorb(self, other: ConvergenceTracker) -> None:
        total = self.count + other.count
        if other.count == 0:
            return
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / total)
        self.count = total

    @classmethod
    def merge(cls, trackers: Sequence[ConvergenceTracker]) -> ConvergenceTracker:
        pooled = cls.empty(len(trackers[0].mean))
        for tracker in trackers:
            pooled._absorb(tracker)
        return pooled

    @property
    def std_errors(self) -> np.ndarray:
        if self.count < 2:  # no spread is known from fewer than two samples
            return np.full_like(self.mean, np.inf)
        return np.sqrt(self.m2 / (self.count - 1) / self.count)

    def converged(self, tolerance: Tolerance, min_count: int, v_all: float, v_none: float) -> bool:
        return self.count >= max(min_count, 2) and tolerance.met(self.std_errors, v_all, v_none)

    def to_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping) -> ConvergenceTracker:
        return cls(int(data["count"]), np.asarray(data["mean"], float), np.asarray(data["m2"], float))


@dataclass
class ShapleyResult:
    players: list[str]
    values: np.ndarray
    std_errors: np.ndarray
    evaluations: int
    v_all: float
    v_none: float
    method: str  # 'exact' | 'permutation' | 'kernel'
    converged: bool
    # Sampling state, kept so that shards can be pooled exactly (None for exact results).
    tracker: ConvergenceTracker | RegressionTracker | None = field(default=None, repr=False)
    reused: int = 0  # coalition values taken from earlier results (eval/subsets.csv), not evaluated here

    @property
    def efficiency_gap(self) -> float:
        """Σφ − (v(all) − v(none)); zero up to rounding for exact values and for any whole
        number of permutations, since each permutation's contributions telescope."""
        return float(self.values.sum() - (self.v_all - self.v_none))

    def to_records(self) -> list[dict]:
        return [
            {"player": p, "phi": float(v), "std_error": _finite_or_none(s),
             "evaluations": self.evaluations}
            for p, v, s in zip(self.players, self.values, self.std_errors)
        ]

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "players": list(self.players),
            "values": self.values.tolist(),
            "std_errors": [_finite_or_none(s) for s in self.std_errors],
            "evaluations": self.evaluations,
            "v_all": self.v_all,
            "v_none": self.v_none,
            "converged": self.converged,
            "reused": self.reused,
            "efficiency_gap": self.efficiency_gap,
            "tracker": None if self.tracker is None else self.tracker.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> ShapleyResult:
        """Inverse of ``to_dict``: lets shards written as JSON be merged."""
        tracker = data.get("tracker")
        return cls(
            players=list(data["players"]),
            values=np.asarray(data["values"], float),
            std_errors=np.array([np.inf if s is None else s for s in data["std_errors"]], float),
            evaluations=int(data["evaluations"]),
            v_all=float(data["v_all"]),
            v_none=float(data["v_none"]),
            method=data["method"],
            converged=bool(data["converged"]),
            reused=int(data.get("reused", 0)),
            tracker=None if tracker is None else TRACKERS[data["method"]].from_dict(tracker),
        )


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _player_names(player_names: Sequence[str] | None, num_players: int) -> list[str]:
    if player_names is None:
        return [f"p{i}" for i in range(num_players)]
    if len(player_names) != num_players:
        raise ValueError(f"{len(player_names)} player names for {num_players} players")
    return [str(p) for p in player_names]


def all_coalitions(num_players: int) -> np.ndarray:
    """Bool [2^P, P]; row m is the coalition whose bitmask is m (bit i = player i)."""
    masks = np.arange(2**num_players)
    return ((masks[:, None] >> np.arange(num_players)) & 1).astype(bool)


def shapley_from_table(table: np.ndarray, num_players: int) -> np.ndarray:
    """φ_i = Σ_{S∌i} |S|!(P−|S|−1)!/P! · (v(S∪i) − v(S)), with v indexed by bitmask.

    `table` is [2^P] (one game: φ is [P]) or [2^P, n] (n games at once, e.g. a map's pixels: φ is [P, n]).
    """
    masks = np.arange(2**num_players)
    sizes = all_coalitions(num_players).sum(axis=1)
    weights = np.array([1.0 / (num_players * comb(num_players - 1, s)) for s in range(num_players)])
    phi = np.empty((num_players,) + table.shape[1:])
    for i in range(num_players):
        without = masks[(masks >> i) & 1 == 0]
        phi[i] = weights[sizes[without]] @ (table[without | (1 << i)] - table[without])
    return phi


def _exact_result(table: np.ndarray, players: list[str], evaluations: int) -> ShapleyResult:
    p = len(players)
    return ShapleyResult(
        players=players, values=shapley_from_table(table, p), std_errors=np.zeros(p),
        evaluations=evaluations, v_all=float(table[-1]), v_none=float(table[0]),
        method="exact", converged=True,
    )


def exact_shapley(
    value_fn: ValueFn | CoalitionCache,
    num_players: int,
    player_names: Sequence[str] | None = None,
    max_players: int = EXACT_MAX_PLAYERS,
) -> ShapleyResult:
    """Exact Shapley values from all 2^P coalitions, evaluated in one batched call."""
    if num_players < 1:
        raise ValueError("exact Shapley needs at least one player")
    if num_players > max_players:
        raise TooManyPlayersError(
            f"exact Shapley needs 2^{num_players} coalition evaluations; use it for 1 to "
            f"{max_players} players and permutation sampling above that"
        )
    players = _player_names(player_names, num_players)
    cache = _as_cache(value_fn, num_players)
    before = cache.evaluations
    table = cache.values(all_coalitions(num_players))
    return _exact_result(table, players, cache.evaluations - before)


def shapley_from_subset_values(
    values: Mapping[frozenset[int], float],
    num_players: int,
    player_names: Sequence[str] | None = None,
) -> ShapleyResult:
    """Exact Shapley values from already-computed subset values (e.g. eval-subsets results).

    ``values`` maps every subset of ``range(num_players)``, the empty set included, to v(S).
    No evaluation is made, so ``evaluations`` is 0.
    """
    table = np.full(2**num_players, np.nan)
    for subset, v in values.items():
        if any(not 0 <= i < num_players for i in subset):
            raise ValueError(f"subset {sorted(subset)} names a player outside 0..{num_players - 1}")
        table[sum(1 << i for i in subset)] = v
    missing = np.flatnonzero(np.isnan(table))
    if missing.size:
        shown = [sorted(np.flatnonzero(all_coalitions(num_players)[m]).tolist()) for m in missing[:5]]
        raise ValueError(
            f"{missing.size} of {2**num_players} subset values are missing (the empty set "
            f"counts), e.g. {shown}"
        )
    return _exact_result(table, _player_names(player_names, num_players), evaluations=0)


def _as_cache(value_fn: ValueFn | CoalitionCache, num_players: int) -> CoalitionCache:
    if isinstance(value_fn, CoalitionCache):
        return value_fn
    return CoalitionCache(value_fn, num_players)


def antithetic_permutations(seed: int, first_pair: int, num_pairs: int, num_players: int) -> np.ndarray:
    """[2·num_pairs, P]: rows 2k and 2k+1 are pair ``first_pair + k`` and its reverse.

    Each pair's permutation depends only on (seed, pair index), not on batching, so shards that
    run disjoint pair ranges reproduce exactly the permutations of one run over all of them."""
    perms = np.empty((2 * num_pairs, num_players), dtype=np.int64)
    for k in range(num_pairs):
        perm = np.random.default_rng([seed, first_pair + k]).permutation(num_players)
        perms[2 * k], perms[2 * k + 1] = perm, perm[::-1]
    return perms


def prefix_coalitions(perms: np.ndarray) -> np.ndarray:
    """Bool [B, P+1, P]: coalition t of permutation b holds its first t players."""
    ranks = np.argsort(perms, axis=1)  # ranks[b, i] = position of player i in perms[b]
    steps = np.arange(perms.shape[1] + 1)
    return ranks[:, None, :] < steps[None, :, None]


def pair_samples(perms: np.ndarray, prefix_values: np.ndarray) -> np.ndarray:
    """One sample per antithetic pair [B/2, P]: each player's marginal contribution averaged
    over the permutation and its reverse (the pair is the unit for the standard error)."""
    ranks = np.argsort(perms, axis=1)
    marginal = np.take_along_axis(prefix_values, ranks + 1, axis=1) - np.take_along_axis(
        prefix_values, ranks, axis=1
    )
    return marginal.reshape(-1, 2, perms.shape[1]).mean(axis=1)


# Per sampler (``ShapleyResult.method``): coalition evaluations per sampling unit (a kernel pair, or
# an antithetic pair of permutations with its own ∅ and full set), the fixed cost of a run (the
# kernel's v(∅) and v(all)), and the units it takes before every standard error is finite (the kernel
# fit needs about 2P pairs to tell P players apart; a sample variance needs two pairs).
UNIT_COST = {"kernel": lambda p: 2, "permutation": lambda p: 2 * (p + 1)}
FIXED_COST = {"kernel": 2, "permutation": 0}
UNITS_FOR_ERRORS = {"kernel": lambda p: 2 * p, "permutation": lambda p: 2}


def budget_for_errors(method: str, num_players: int) -> int:
    """Coalition evaluations after which a sampler's standard errors are usually all finite."""
    return FIXED_COST[method] + UNITS_FOR_ERRORS[method](num_players) * UNIT_COST[method](num_players)


# progress(evaluations spent, largest standard error, the error at which sampling stops); the
# largest error is None while unknown (fewer than two samples), the stopping one None when only the
# budget stops sampling (tolerance 0)
ProgressFn = Callable[[int, "float | None", "float | None"], None]


def report_progress(progress: ProgressFn | None, evaluations: int, errors: np.ndarray | None, tolerance: Tolerance,
                    v_all: float, v_none: float) -> None:
    """Tell `progress(evaluations, largest standard error, the error that stops sampling)`."""
    if progress is None:
        return
    known = errors is not None and len(errors) and np.isfinite(errors).all()
    progress(evaluations, float(errors.max()) if known else None,
             tolerance.threshold(v_all, v_none) if tolerance.stops_early else None)


def affordable_pairs(cache: CoalitionCache, budget: int | None, start: int, keys: list[bytes], rows_per_pair: int) -> int:
    """How many leading pairs of a batch (``rows_per_pair`` coalition keys each) fit in what is left
    of ``budget`` since the cache stood at ``start`` evaluations; cached or repeated coalitions are free."""
    num_pairs = len(keys) // rows_per_pair
    if budget is None:
        return num_pairs
    left = budget - (cache.evaluations - start)
    new: set[bytes] = set()
    for k in range(num_pairs):
        new.update(cache.new_keys(keys[k * rows_per_pair : (k + 1) * rows_per_pair]))
        if len(new) > left:
            return k
    return num_pairs


def next_batch(count: int, min_pairs: int, batch_pairs: int, pairs: int | None) -> int:
    """Pairs to draw next: ``min_pairs`` first, then half as many as there are (so the stopping rule
    is checked after 1, 1.5, 2.25 ... times the minimum, and never overshoots it by more than half
    what was spent), at most ``batch_pairs`` per call; with ``pairs`` asked for (shards), what is left."""
    if pairs is not None:
        return min(batch_pairs, pairs - count)
    return max(1, min(batch_pairs, max(min_pairs - count, count // 2)))


class PermutationSampler:
    """Antithetic permutation sampling of Shapley values.

    Each draw is a permutation π and its reverse; the P+1 prefix coalitions of a whole batch of
    pairs go to the value function in one call. Sampling stops when the largest standard error
    meets ``tolerance`` (a ``Tolerance``; a number is in the game's units) after ``min_pairs`` pairs, when the next pair
    would exceed ``budget`` coalition evaluations, or after ``pairs`` pairs when those are asked
    for (shards). When a small game has had all 2^P coalitions evaluated and no pair count was
    asked for, the exact values come from the cache at no further cost.
    """

    def __init__(
        self,
        value_fn: ValueFn | CoalitionCache,
        num_players: int,
        budget: int | None,
        tolerance: float | Tolerance = 0.001,
        batch_permutations: int = 64,
        seed: int = 0,
        player_names: Sequence[str] | None = None,
        min_pairs: int = 8,
        progress: ProgressFn | None = None,  # told after every batch: (evaluations, largest error, stopping error)
    ):
        if num_players < 1:
            raise ValueError("permutation sampling needs at least one player")
        if batch_permutations < 2:
            raise ValueError("batch_permutations must be at least 2 (one antithetic pair)")
        self.cache = _as_cache(value_fn, num_players)
        self.num_players = num_players
        self.budget = budget
        self.tolerance = Tolerance.of(tolerance)
        self.batch_pairs = batch_permutations // 2
        self.seed = seed
        self.players = _player_names(player_names, num_players)
        self.min_pairs = min_pairs
        self.progress = progress

    def run(self, pairs: int | None = None, seed: int | None = None, first_pair: int = 0) -> ShapleyResult:
        """Sample pairs ``first_pair, first_pair+1, ...`` of the stream ``seed``.

        With ``pairs`` set, exactly that many are run (budget permitting) and the tolerance is not
        checked: shard i of n runs ``run(pairs=m, first_pair=i*m)`` and ``merge`` pools them.
        """
        if pairs is not None and pairs < 1:
            raise ValueError(f"pairs must be at least 1, got {pairs}")
        seed = self.seed if seed is None else seed
        tracker = ConvergenceTracker.empty(self.num_players)
        start = self.cache.evaluations
        while pairs is None or tracker.count < pairs:
            wanted = next_batch(tracker.count, self.min_pairs, self.batch_pairs, pairs)
            perms = antithetic_permutations(seed, first_pair + tracker.count, wanted, self.num_players)
            coalitions = prefix_coalitions(perms).reshape(-1, self.num_players)
            keys = self.cache.keys(coalitions)
            affordable = self._affordable_pairs(keys, start)
            if affordable:
                rows = affordable * 2 * (self.num_players + 1)
                prefix_values = self.cache.values(coalitions[:rows], keys[:rows])
                perms = perms[: 2 * affordable]
                tracker.update(pair_samples(perms, prefix_values.reshape(len(perms), -1)))
                if self.progress is not None:
                    report_progress(self.progress, self.cache.evaluations - start, tracker.std_errors, self.tolerance, *self._ends())
            if affordable < wanted:  # budget spent
                break
            if pairs is None and self.cache.complete:
                return _exact_result(self.cache.values(all_coalitions(self.num_players)),
                                     self.players, self.cache.evaluations - start)
            if pairs is None and tracker.converged(self.tolerance, self.min_pairs, *self._ends()):
                break
        if tracker.count == 0:
            raise ValueError(
                f"budget of {self.budget} coalition evaluations cannot pay for one antithetic pair "
                f"(up to {2 * self.num_players} evaluations for {self.num_players} players)"
            )
        return self._result(tracker, self.cache.evaluations - start)

    def _affordable_pairs(self, keys: list[bytes], start: int) -> int:
        return affordable_pairs(self.cache, self.budget, start, keys, 2 * (self.num_players + 1))

    def _ends(self) -> tuple[float, float]:
        """v(all), v(none): every permutation's first and last prefix, so cached after the first pair."""
        v_none, v_all = self.cache.values(np.stack([np.zeros(self.num_players, bool), np.ones(self.num_players, bool)]))
        return float(v_all), float(v_none)

    def _result(self, tracker: ConvergenceTracker, evaluations: int) -> ShapleyResult:
        v_all, v_none = self._ends()
        return ShapleyResult(
            players=self.players, values=tracker.mean.copy(), std_errors=tracker.std_errors,
            evaluations=evaluations, v_all=v_all, v_none=v_none,
            method="permutation", converged=tracker.converged(self.tolerance, self.min_pairs, v_all, v_none),
            tracker=tracker,
        )


# ---------------------------------------------------------------------------------------------
# Paired KernelSHAP
# ---------------------------------------------------------------------------------------------


def kernel_size_weights(num_players: int) -> np.ndarray:
    """P(|S| = s) for s = 1 … P−1 under the Shapley kernel: ∝ (P−1) / (s (P−s))."""
    sizes = np.arange(1, num_players)
    w = (num_players - 1) / (sizes * (num_players - sizes))
    return w / w.sum()


def kernel_pairs(seed: int, first_pair: int, num_pairs: int, num_players: int) -> np.ndarray:
    """Bool [2·num_pairs, P]: rows 2k and 2k+1 are pair ``first_pair + k``'s coalition and its
    complement. Like ``antithetic_permutations``, a pair depends only on (seed, pair index)."""
    weights = kernel_size_weights(num_players)
    out = np.zeros((2 * num_pairs, num_players), dtype=bool)
    for k in range(num_pairs):
        rng = np.random.default_rng([seed, first_pair + k, 1])  # the 1: not the permutation stream
        size = 1 + rng.choice(num_players - 1, p=weights)
        out[2 * k, rng.permutation(num_players)[:size]] = True
        out[2 * k + 1] = ~out[2 * k]
    return out


@dataclass
class RegressionTracker:
    """The pairs of paired KernelSHAP (coalition S, gains v(S) − v(∅) and v(S̄) − v(∅)), kept whole:
    the standard error needs each pair's residual against the final fit, and shards pool by
    concatenation. A pair is P bits and two floats, small next to the model evaluations it cost."""

    coalitions: np.ndarray  # bool [n, P]: the first coalition of each pair (the second is its complement)
    gains: np.ndarray  # float [n, 2]

    @classmethod
    def empty(cls, num_players: int) -> RegressionTracker:
        return cls(np.zeros((0, num_players), bool), np.zeros((0, 2)))

    @property
    def count(self) -> int:
        return len(self.coalitions)

    def update(self, coalitions: np.ndarray, gains: np.ndarray) -> None:
        """Add pairs: coalitions [2n, P] as ``kernel_pairs`` lays them out, gains [2n] = v(z) − v(∅)."""
        self.coalitions = np.concatenate([self.coalitions, coalitions[0::2]])
        self.gains = np.concatenate([self.gains, np.asarray(gains, float).reshape(-1, 2)])

    @classmethod
    def merge(cls, trackers: Sequence[RegressionTracker]) -> RegressionTracker:
        return cls(np.concatenate([t.coalitions for t in trackers]), np.concatenate([t.gains for t in trackers]))

    def solve(self, total: float) -> tuple[np.ndarray, np.ndarray]:
        """φ from the pairs by least squares with a fixed effect per coalition size, and its
        standard errors.

        The fit is v(S) − v(∅) ≈ α_|S| + Σ_{i∈S} φ_i over both coalitions of every pair, subject to
        Σφ = total. The size effects α absorb how the value grows with the number of visible players
        (a model's AUC climbs from chance and saturates), which no additive fit can follow and
        which plain KernelSHAP leaves in its residuals. The estimand does not move: on the complete,
        kernel-weighted table the within-size contrast of every player differs from its Shapley
        value by one constant for all players, which the constraint fixes (a test enumerates it).
        On ``benchmarks/attribution_bench.py`` this about halved the error on a model's AUC game
        and left the other games' errors equal or lower.

        Solved on the within-size deviations Z̃, G̃ (Frisch–Waugh): A = Z̃ᵀZ̃ / 2n has 1 in its null
        space, so φ = (A + 11ᵀ)⁻¹ b + total/P · 1 with b = Z̃ᵀG̃ / 2n. Standard errors: the sandwich
        C Cov(r) C / n with C = A⁺ and r_k pair k's score ½[z̃(g̃ − z̃·φ) + z̃'(g̃' − z̃'·φ)]; leaving
        A's noise out overstates the error 5 to 25 times, as A's and b's errors cancel. Too few pairs
        to tell players apart gives infinite standard errors."""
        n, p = self.coalitions.shape
        z = np.concatenate([self.coalitions, ~self.coalitions]).astype(np.float64)  # [2n, P]: S then S̄
        g = np.concatenate([self.gains[:, 0], self.gains[:, 1]])
        z, g = _within_size_deviations(z, g)
        a = z.T @ z / (2 * n)
        b = z.T @ g / (2 * n)
        ones = np.ones((p, p))
        inv = np.linalg.pinv(a + ones)  # pinv: with too few pairs A + 11ᵀ is singular, and φ is then a least-norm fit
        values = inv @ (b - b.mean()) + total / p
        if n < 2 or np.linalg.matrix_rank(a) < p - 1:
            return values, np.full(p, np.inf)
        residuals = g - z @ values  # z̃ rows sum to 0: the constant total/P drops out
        scores = 0.5 * (z[:n] * residuals[:n, None] + z[n:] * residuals[n:, None])
        scores -= scores.mean(axis=0)
        spread = (inv - ones / p**2) @ scores.T  # [P, n]; A⁺ on the complement of 1
        return values, np.sqrt((spread**2).sum(axis=1) / (n - 1) / n)

    def to_dict(self) -> dict:
        return {"count": self.count, "coalitions": [row.tobytes().hex() for row in np.packbits(self.coalitions, axis=1)],
                "num_players": int(self.coalitions.shape[1]), "gains": self.gains.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping) -> RegressionTracker:
        p = int(data["num_players"])
        packed = np.array([np.frombuffer(bytes.fromhex(h), np.uint8) for h in data["coalitions"]], np.uint8).reshape(-1, (p + 7) // 8)
        return cls(np.unpackbits(packed, axis=1, count=p).astype(bool), np.asarray(data["gains"], float).reshape(-1, 2))


def _within_size_deviations(z: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coalitions and gains minus their means over the rows of the same coalition size."""
    sizes = z.sum(axis=1).astype(np.int64)
    counts = np.bincount(sizes)[sizes][:, None]
    z_means = np.zeros((sizes.max() + 1, z.shape[1]))
    np.add.at(z_means, sizes, z)
    g_means = np.bincount(sizes, weights=g)
    return z - z_means[sizes] / counts, g - g_means[sizes] / counts[:, 0]


class KernelSampler:
    """Paired KernelSHAP with an online standard error.

    Each draw is a coalition S from the Shapley kernel (size s with probability ∝ 1/(s(P−s)),
    then s players uniformly) and its complement; whole batches of pairs go to the value function
    in one call. Values solve the constrained least squares of KernelSHAP with size effects
    (``RegressionTracker.solve``), so Σφ = v(all) − v(none) holds exactly at every stage. Stops like ``PermutationSampler``: tolerance (after
    max(``min_pairs``, P) pairs, so that A is well determined), budget, or ``pairs`` for shards.
    """

    def __init__(
        self,
        value_fn: ValueFn | CoalitionCache,
        num_players: int,
        budget: int | None,
        tolerance: float | Tolerance = 0.001,
        batch_pairs: int = 256,
        seed: int = 0,
        player_names: Sequence[str] | None = None,
        min_pairs: int = 8,
        progress: ProgressFn | None = None,  # told after every batch: (evaluations, largest error, stopping error)
    ):
        if num_players < 2:
            raise ValueError("KernelSHAP needs at least two players (one player's value is v(all) − v(none))")
        self.cache = _as_cache(value_fn, num_players)
        self.num_players = num_players
        self.budget = budget
        self.tolerance = Tolerance.of(tolerance)
        self.batch_pairs = batch_pairs
        self.seed = seed
        self.players = _player_names(player_names, num_players)
        # the sandwich errors of a nearly saturated fit are too small (measured: the largest error 3x
        # the largest reported SE at 2P pairs, 2x from 3P on); no stop on them before 2P pairs
        self.min_pairs = max(min_pairs, UNITS_FOR_ERRORS["kernel"](num_players))
        self.progress = progress

    def run(self, pairs: int | None = None, seed: int | None = None, first_pair: int = 0) -> ShapleyResult:
        """Sample pairs ``first_pair, first_pair+1, ...`` of the stream ``seed`` (``pairs`` as in
        ``PermutationSampler.run``)."""
        if pairs is not None and pairs < 1:
            raise ValueError(f"pairs must be at least 1, got {pairs}")
        seed = self.seed if seed is None else seed
        start = self.cache.evaluations
        ends = np.stack([np.zeros(self.num_players, bool), np.ones(self.num_players, bool)])
        if self.budget is not None and self.budget < 4:
            raise ValueError(f"budget of {self.budget} coalition evaluations cannot pay for v(none), v(all) and one pair")
        v_none, v_all = self.cache.values(ends)
        tracker = RegressionTracker.empty(self.num_players)
        while pairs is None or tracker.count < pairs:
            wanted = next_batch(tracker.count, self.min_pairs, self.batch_pairs, pairs)
            coalitions = kernel_pairs(seed, first_pair + tracker.count, wanted, self.num_players)
            keys = self.cache.keys(coalitions)
            affordable = self._affordable_pairs(keys, start)
            std_errors = None
            if affordable:
                rows = 2 * affordable
                gains = self.cache.values(coalitions[:rows], keys[:rows]) - v_none
                tracker.update(coalitions[:rows], gains)
                # the solve costs more than the sampling at large budgets: only when someone reads it
                # (tolerance 0 can never be met)
                if self.progress is not None or (pairs is None and self.tolerance.stops_early and tracker.count >= self.min_pairs):
                    std_errors = tracker.solve(v_all - v_none)[1]
                    report_progress(self.progress, self.cache.evaluations - start, std_errors, self.tolerance, v_all, v_none)
            if affordable < wanted:  # budget spent
                break
            if pairs is None and self.cache.complete:
                return _exact_result(self.cache.values(all_coalitions(self.num_players)),
                                     self.players, self.cache.evaluations - start)
            if pairs is None and std_errors is not None and tracker.count >= self.min_pairs \
                    and self.tolerance.met(std_errors, v_all, v_none):
                break
        if tracker.count == 0:
            raise ValueError(f"budget of {self.budget} coalition evaluations cannot pay for one pair after v(none) and v(all)")
        return kernel_result(tracker, self.players, self.cache.evaluations - start, v_all, v_none, self.tolerance, self.min_pairs)

    def _affordable_pairs(self, keys: list[bytes], start: int) -> int:
        return affordable_pairs(self.cache, self.budget, start, keys, 2)


def kernel_result(tracker: RegressionTracker, players: list[str], evaluations: int, v_all: float, v_none: float,
                  tolerance: Tolerance, min_pairs: int) -> ShapleyResult:
    values, std_errors = tracker.solve(v_all - v_none)
    return ShapleyResult(
        players=list(players), values=values, std_errors=std_errors, evaluations=evaluations,
        v_all=float(v_all), v_none=float(v_none), method="kernel",
        converged=tracker.count >= min_pairs and tolerance.met(std_errors, v_all, v_none), tracker=tracker,
    )


def merge(results: Sequence[ShapleyResult], tolerance: float | Tolerance = 0.001, min_pairs: int = 8) -> ShapleyResult:
    """Pool shard results: the same means and standard errors as one run over all their pairs.

    Evaluations add up (each shard has its own cache). An exact result makes sampling moot and
    is returned as it is."""
    if not results:
        raise ValueError("nothing to merge")
    exact = [r for r in results if r.method == "exact"]
    if exact:
        return exact[0]
    if any(r.tracker is None for r in results):
        raise ValueError("a permutation result without its sampling state cannot be merged")
    if any(r.players != results[0].players for r in results):
        raise ValueError("shards disagree on the players")
    if len({r.method for r in results}) != 1:
        raise ValueError(f"shards used different estimators: {sorted({r.method for r in results})}")
    first, tolerance = results[0], Tolerance.of(tolerance)
    if first.method == "kernel":
        return kernel_result(RegressionTracker.merge([r.tracker for r in results]), first.players,
                             sum(r.evaluations for r in results), first.v_all, first.v_none, tolerance,
                             max(min_pairs, UNITS_FOR_ERRORS["kernel"](len(first.players))))
    tracker = ConvergenceTracker.merge([r.tracker for r in results])
    return ShapleyResult(
        players=list(first.players), values=tracker.mean.copy(), std_errors=tracker.std_errors,
        evaluations=sum(r.evaluations for r in results), v_all=first.v_all, v_none=first.v_none,
        method="permutation", converged=tracker.converged(tolerance, min_pairs, first.v_all, first.v_none), tracker=tracker,
    )


TRACKERS = {"permutation": ConvergenceTracker, "kernel": RegressionTracker}
