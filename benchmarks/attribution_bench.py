"""Antithetic permutation sampling (miam) against captum's ShapleyValueSampling at equal cost.

The game: a fixed random MLP over 14 groups of 3 input features; the value of a coalition is a
SAGE-style global score, minus the mean squared distance over 64 inputs between the model's output
with only that coalition visible (other groups at the zero baseline) and its output on the whole
input. Both
estimators get the same value function and the same budget of coalition evaluations (captum's
are counted by wrapping its forward function), and are scored by RMSE against exact Shapley
values from all 2^14 coalitions.

    python benchmarks/attribution_bench.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from captum.attr import ShapleyValueSampling

from miam_cli.attribution.estimators import PermutationSampler, exact_shapley

PLAYERS, FEATURES_PER_PLAYER, INPUTS = 14, 3, 64
BUDGETS = (256, 1024, 4096)
SEEDS = range(5)
CHUNK = 2048  # coalitions per forward pass, to bound memory


def make_value_fn():
    torch.manual_seed(0)
    dim = PLAYERS * FEATURES_PER_PLAYER
    model = torch.nn.Sequential(
        torch.nn.Linear(dim, 64), torch.nn.GELU(), torch.nn.Linear(64, 64), torch.nn.GELU(),
        torch.nn.Linear(64, 1),
    ).double()
    x = 1.5 * torch.randn(INPUTS, dim, dtype=torch.float64)
    player_of_feature = torch.arange(dim) // FEATURES_PER_PLAYER
    with torch.no_grad():
        reference = model(x)  # [INPUTS, 1]: the prediction with everything visible

    @torch.no_grad()
    def value_fn(coalitions: np.ndarray) -> np.ndarray:
        visible = torch.as_tensor(coalitions)[:, player_of_feature].double()  # [K, dim]
        out = [-((model(x[None] * v[:, None]) - reference) ** 2).mean(dim=(1, 2))
               for v in visible.split(CHUNK)]
        return torch.cat(out).numpy()

    return value_fn


class CountingForward:
    """captum's forward: a batch of coalition indicators [n, P] -> values [n], counting rows."""

    def __init__(self, value_fn):
        self.value_fn, self.evaluations = value_fn, 0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.evaluations += z.shape[0]
        return torch.from_numpy(self.value_fn(z.numpy() > 0.5))


def run_miam(value_fn, budget: int, seed: int):
    # tolerance 0: spend the whole budget, as captum does
    result = PermutationSampler(value_fn, PLAYERS, budget=budget, tolerance=0, seed=seed).run()
    return result.values, result.evaluations


def run_captum(value_fn, budget: int, seed: int):
    forward = CountingForward(value_fn)
    torch.manual_seed(seed)  # captum draws permutations with torch.randperm
    # cost: one baseline evaluation, then P prefixes per permutation (no cache)
    n_samples = (budget - 1) // PLAYERS
    attr = ShapleyValueSampling(forward).attribute(
        torch.ones(1, PLAYERS, dtype=torch.float64), baselines=0.0, n_samples=n_samples,
        perturbations_per_eval=PLAYERS,
    )
    return attr[0].numpy(), forward.evaluations


def score(method, value_fn, truth, budget):
    errors, evals, start = [], [], time.perf_counter()
    for seed in SEEDS:
        values, used = method(value_fn, budget, seed)
        assert used <= budget, (method.__name__, used, budget)
        errors.append(np.mean((values - truth) ** 2))
        evals.append(used)
    seconds = (time.perf_counter() - start) / len(SEEDS)
    return float(np.sqrt(np.mean(errors))), float(np.mean(evals)), seconds


def main() -> None:
    torch.set_num_threads(2)
    value_fn = make_value_fn()
    start = time.perf_counter()
    exact = exact_shapley(value_fn, PLAYERS)
    print(f"game: {PLAYERS} players, exact from {exact.evaluations} coalitions in "
          f"{time.perf_counter() - start:.1f} s; φ range [{exact.values.min():.3f}, "
          f"{exact.values.max():.3f}], efficiency gap {exact.efficiency_gap:.1e}")
    print(f"RMSE vs exact over {len(SEEDS)} seeds; evals = mean coalition evaluations used; "
          "time = mean seconds per run")
    header = f"{'budget':>7} | {'miam RMSE':>10} {'evals':>7} {'time':>6} | {'captum RMSE':>11} {'evals':>7} {'time':>6} | {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for budget in BUDGETS:
        m_err, m_evals, m_time = score(run_miam, value_fn, exact.values, budget)
        c_err, c_evals, c_time = score(run_captum, value_fn, exact.values, budget)
        print(f"{budget:>7} | {m_err:>10.2e} {m_evals:>7.0f} {m_time:>6.2f} | "
              f"{c_err:>11.2e} {c_evals:>7.0f} {c_time:>6.2f} | {m_err / c_err:>6.3f}")
    print("ratio = miam RMSE / captum RMSE (target <= 0.5)")


if __name__ == "__main__":
    main()
