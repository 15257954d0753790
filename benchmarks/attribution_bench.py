"""miam's Shapley samplers against captum's ShapleyValueSampling at equal cost.

miam's default sampler is paired KernelSHAP (`KernelSampler`); its antithetic permutation sampler
(`PermutationSampler`, `--sampler permutation`) is measured beside it.

Games: a fixed random MLP over 14 groups of 3 input features, scored over a batch of 64 inputs
with the groups outside the coalition set to the zero baseline. The two targets of
`miam attribute`: `class` (mean predicted probability) and `global` (minus the mean log loss
against labels drawn from the full model). The MLP's weights are scaled to make it mildly or
sharply non-linear (logit sd ≈ 0.4 or ≈ 1.3): antithetic pairs cancel every interaction up to
second order exactly, so their advantage is largest on mild games.

All estimators get the same value function and the same budget of coalition evaluations
(captum's are counted by wrapping its forward function) and are scored by RMSE against exact
Shapley values from all 2^14 coalitions, over several seeds.

    python benchmarks/attribution_bench.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from captum.attr import ShapleyValueSampling

from miam_cli.attribution.estimators import KernelSampler, PermutationSampler, exact_shapley

PLAYERS, FEATURES_PER_PLAYER, INPUTS = 14, 3, 64
BUDGETS = (256, 1024, 4096)
SEEDS = range(5)
CHUNK = 2048  # coalitions per forward pass, to bound memory
GAMES = [("class", 2.0), ("global", 2.0), ("class", 3.0), ("global", 3.0)]  # (target, weight gain)


def make_value_fn(target: str, gain: float):
    torch.manual_seed(0)
    dim = PLAYERS * FEATURES_PER_PLAYER
    model = torch.nn.Sequential(
        torch.nn.Linear(dim, 64), torch.nn.GELU(), torch.nn.Linear(64, 64), torch.nn.GELU(),
        torch.nn.Linear(64, 1),
    ).double()
    x = torch.randn(INPUTS, dim, dtype=torch.float64)
    player_of_feature = torch.arange(dim) // FEATURES_PER_PLAYER
    with torch.no_grad():
        for layer in model[::2]:
            layer.weight.mul_(gain)
        logits = model(x)[:, 0]
        labels = torch.bernoulli(torch.sigmoid(logits), generator=torch.Generator().manual_seed(1))

    def score(z: torch.Tensor) -> torch.Tensor:  # logits [K, INPUTS] -> values [K]
        if target == "class":
            return torch.sigmoid(z).mean(dim=1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits
        return -loss(z, labels.expand_as(z), reduction="none").mean(dim=1)

    @torch.no_grad()
    def value_fn(coalitions: np.ndarray) -> np.ndarray:
        visible = torch.as_tensor(coalitions)[:, player_of_feature].double()  # [K, dim]
        out = [score(model(x[None] * v[:, None])[..., 0]) for v in visible.split(CHUNK)]
        return torch.cat(out).numpy()

    return value_fn, float(logits.std())


class CountingForward:
    """captum's forward: a batch of coalition indicators [n, P] -> values [n], counting rows."""

    def __init__(self, value_fn):
        self.value_fn, self.evaluations = value_fn, 0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.evaluations += z.shape[0]
        return torch.from_numpy(self.value_fn(z.numpy() > 0.5))


def run_kernel(value_fn, budget: int, seed: int):
    # tolerance 0: spend the whole budget, as captum does
    result = KernelSampler(value_fn, PLAYERS, budget=budget, tolerance=0, seed=seed).run()
    return result.values, result.evaluations


def run_permutation(value_fn, budget: int, seed: int):
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


def score_method(method, value_fn, truth, budget):
    errors, evals, start = [], [], time.perf_counter()
    for seed in SEEDS:
        values, used = method(value_fn, budget, seed)
        assert used <= budget, (method.__name__, used, budget)
        errors.append(np.mean((values - truth) ** 2))
        evals.append(used)
    seconds = (time.perf_counter() - start) / len(SEEDS)
    return float(np.sqrt(np.mean(errors))), float(np.mean(evals)), seconds


def bench_game(target: str, gain: float) -> None:
    value_fn, logit_sd = make_value_fn(target, gain)
    start = time.perf_counter()
    exact = exact_shapley(value_fn, PLAYERS)
    print(f"\ngame: target={target}, logit sd {logit_sd:.2f}; exact from {exact.evaluations} "
          f"coalitions in {time.perf_counter() - start:.1f} s; φ range [{exact.values.min():.4f}, "
          f"{exact.values.max():.4f}], efficiency gap {exact.efficiency_gap:.1e}")
    header = (f"{'budget':>7} | {'kernel RMSE':>11} {'time s':>6} | {'perm RMSE':>10} {'time s':>6} | "
              f"{'captum RMSE':>11} {'time s':>6} | {'kernel/captum':>13} {'perm/captum':>11}")
    print(header)
    print("-" * len(header))
    for budget in BUDGETS:
        k_err, _, k_time = score_method(run_kernel, value_fn, exact.values, budget)
        p_err, _, p_time = score_method(run_permutation, value_fn, exact.values, budget)
        c_err, _, c_time = score_method(run_captum, value_fn, exact.values, budget)
        print(f"{budget:>7} | {k_err:>11.2e} {k_time:>6.2f} | {p_err:>10.2e} {p_time:>6.2f} | "
              f"{c_err:>11.2e} {c_time:>6.2f} | {k_err / c_err:>13.3f} {p_err / c_err:>11.3f}")


def main() -> None:
    torch.set_num_threads(1)  # small forward calls; extra threads only add contention on a shared CPU
    print(f"{PLAYERS} players; RMSE vs exact over {len(SEEDS)} seeds; evals = mean coalition "
          "evaluations used; time = mean seconds per run")
    for target, gain in GAMES:
        bench_game(target, gain)
    print("\nratio = miam RMSE / captum RMSE at equal coalition evaluations; target for miam's default "
          "(kernel) <= 0.5")


if __name__ == "__main__":
    main()
