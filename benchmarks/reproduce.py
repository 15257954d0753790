"""The reproduction study: every masking strategy, MIAM's variants and the oracles, on planted truth.

    python benchmarks/reproduce.py                                   # all studies, 5 seeds (make reproduce)
    python benchmarks/reproduce.py --study geoplant --seeds 2 --pilot   # validation numbers only
    python benchmarks/reproduce.py --study geoplant-v2 --seeds 3        # the v2 study (docs/results-v2.md)

Studies (each: synthetic data -> store -> every configuration x seed -> eval-subsets on val and test):

- `geoplant`    synthetic GeoPlant, generator v3 (the paper's regime: Sentinel-2 strong alone, redundant
                with the tabular data), 3000 surveys, the demo recipe, 12 epochs.
- `plateau`     small tabular modalities, 4000 points, binary presence (`miam_cli.synth.plateau`):
                every modality plateaus in an epoch or two, where the imbalance signal is noisiest.
- `taxabench`   synthetic TaxaBench, embeddings route (five single-token modalities, top-1).
- `geoplant-v2` the earlier study's data (generator v2), for comparison.

For each study the script writes `docs/results/<study>/compare.md` (mean ± std over seeds), the paired
comparisons of MIAM with every baseline (`paired.md`: per-seed differences, 95% t-intervals, on the
average and on the weak modality alone), the share of training samples in which each modality was
seen alone, and how much r_m moved per update; then `docs/results.md` with the claims measured.
Settings are chosen on the validation split (`--pilot` prints it); the test split is read only for
the final tables. Every step is a library call that is also a command (`miam train`, `miam
eval-subsets`, `miam compare --paired miam`). Runs are reused when they exist under `--work`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from miam_cli.recipe import load_recipe  # noqa: E402
from miam_cli.engine.train import train  # noqa: E402
from miam_cli.evaluate.compare import ORACLE, compare_runs, wide_table, write_compare  # noqa: E402
from miam_cli.evaluate.paired import format_paired_cell, paired_comparison, write_paired  # noqa: E402
from miam_cli.evaluate.subsets import run_eval_subsets  # noqa: E402

# MIAM as the paper writes it, and with this project's changes (issue 13). Each is spelled out in
# full so that the rows mean the same whatever the library defaults are.
MIAM_PAPER = ["masking.strategy=miam", "masking.monitor=paper", "masking.kappa_per_token=0"]
MIAM_NOISE = ["masking.strategy=miam", "masking.monitor=noise-aware", "masking.kappa_per_token=0"]
MIAM_NOISE_WHOLE = ["masking.strategy=miam", "masking.monitor=noise-aware", "masking.kappa_per_token=1"]
MIAM_PAPER_WHOLE = ["masking.strategy=miam", "masking.monitor=paper", "masking.kappa_per_token=1"]
BASELINES = {s: [f"masking.strategy={s}"] for s in ("constant", "uniform", "dirichlet", "dropout", "opm", "uniform-cube", "beta-cube")}
CONFIGS = {**BASELINES, "miam-paper": MIAM_PAPER, "miam-noise": MIAM_NOISE, "miam-noise-whole": MIAM_NOISE_WHOLE,
           "miam-paper-whole": MIAM_PAPER_WHOLE, "beta-cube-whole": ["masking.strategy=beta-cube", "masking.kappa_per_token=1"],
           "miam-noise-whole-lam0.5": [*MIAM_NOISE_WHOLE, "masking.lambda=0.5"],
           "miam-noise-whole3": ["masking.strategy=miam", "masking.monitor=noise-aware", "masking.kappa_per_token=3"]}
# what every study trains: the seven baselines, MIAM as the paper writes it, and the variants of issue 13
MAIN = [*BASELINES, "miam-paper", "miam-noise", "miam-noise-whole", "miam-noise-whole3"]
# the paper's ablation chain, extended by this project's two changes
CHAIN = ["uniform", "uniform-cube", "beta-cube", "miam-paper", "miam-noise", "miam-noise-whole"]
LABELS = {"miam-paper": "miam (paper)", "miam-noise": "miam (noise-aware monitor)",
          "miam-noise-whole": "miam (noise-aware, whole-modality corners)", "miam-paper-whole": "miam (paper monitor, whole-modality corners)",
          "beta-cube-whole": "beta-cube (whole-modality corners)", "miam-noise-whole-lam0.5": "miam (noise-aware, whole, λ=0.5)",
          "miam-noise-whole3": "miam (noise-aware, whole-modality corners ×3)"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Study:
    name: str
    title: str
    recipe: Path
    weak: str  # the modality whose gap to its oracle MIAM should close
    oracles: dict[str, str]  # oracle name -> `modalities=` override
    overrides: list[str] = field(default_factory=list)
    selectors: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=lambda: list(MAIN))


def geoplant_data(work: Path, surveys: int, version: int) -> Path:
    from miam_cli.data.geoplant import GeoPlantOptions, plan_geoplant
    from miam_cli.data.prepare import run_prepare
    from miam_cli.synth.geoplant import synth_geoplant

    raw, store = work / "raw", work / "store"
    if not (raw / "truth.json").exists():
        synth_geoplant(raw, surveys=surveys, species=24, seed=0, version=version)
    if not (store / "store.json").exists():
        plan, decoder = plan_geoplant(raw, GeoPlantOptions())
        run_prepare(plan, decoder, store, overwrite=True)
    return store


def plateau_data(work: Path) -> Path:
    from miam_cli.data.custom import load_spec, plan_custom
    from miam_cli.data.prepare import run_prepare
    from miam_cli.synth.plateau import synth_plateau

    raw, store = work / "raw", work / "store"
    if not (raw / "truth.json").exists():
        synth_plateau(raw, points=4000, seed=0)
    if not (store / "store.json").exists():
        plan, decoder = plan_custom(load_spec(raw / "spec.yaml"), raw / "spec.yaml")
        run_prepare(plan, decoder, store, overwrite=True)
    return store


def taxabench_data(work: Path) -> Path:
    from miam_cli.data.prepare import run_prepare
    from miam_cli.data.taxabench import TaxaBenchOptions, plan_taxabench
    from miam_cli.synth.taxabench import synth_taxabench

    raw, store = work / "raw", work / "store"
    if not (raw / "truth.json").exists():
        synth_taxabench(raw, seed=0)
    if not (store / "store.json").exists():
        plan, decoder = plan_taxabench(raw, TaxaBenchOptions(embeddings=[str(raw / "embeddings.pt")]))
        run_prepare(plan, decoder, store, overwrite=True)
    return store


GEOPLANT_ORACLES = {"sentinel2": "{sentinel2: [sentinel2]}", "timeseries": "{timeseries: [landsat, bioclim]}",
                    "tabular": "{tabular: [tabular]}"}


def make_study(name: str, work: Path, args) -> tuple[Study, Path]:
    recipes = ROOT / "recipes"
    epochs = [f"train.epochs={args.epochs}"]
    if name in ("geoplant", "geoplant-v2"):
        version = 3 if name == "geoplant" else 2
        store = geoplant_data(work, args.surveys, version)
        selectors = ["tabular[variable=bio1]", "landsat[year=2003]", "sentinel2[patch=center]"]
        title = ("GeoPlant, synthetic generator v3 (the paper's regime)" if version == 3
                 else "GeoPlant, synthetic generator v2 (the earlier study's data)")
        return Study(name, title, recipes / "demo.yaml", "sentinel2", GEOPLANT_ORACLES, epochs, selectors), store
    if name == "plateau":
        store = plateau_data(work)
        mods = ["climate", "soil", "topo", "cover"]
        return Study(name, "Plateau regime: small tabular modalities, binary presence/background", recipes / "demo.yaml", "cover",
                     {m: f"[{m}]" for m in mods}, [f"modalities=[{', '.join(mods)}]", *epochs]), store
    if name == "taxabench":
        store = taxabench_data(work)
        mods = list(json.loads((store / "store.json").read_text())["modalities"])
        return Study(name, "TaxaBench, synthetic (embeddings route)", recipes / "taxabench.yaml", "location",
                     {m: f"[{m}]" for m in mods}, epochs), store
    raise SystemExit(f"unknown study {name!r}")


def finished(run: Path, epochs: int) -> bool:
    metrics = run / "metrics.csv"
    return metrics.exists() and len(pd.read_csv(metrics)) >= epochs and (run / "checkpoints" / "best.pt").exists()


def train_once(recipe_path: Path, store: Path, run: Path, overrides: list[str]) -> Path:
    """Train unless a finished run is there; an interrupted one (last.pt, fewer epochs) is resumed."""
    recipe = load_recipe(recipe_path, [f"store={store}", *overrides])
    if finished(run, recipe.train.epochs):
        return run
    if (run / "checkpoints" / "last.pt").exists():
        return train(recipe, run, resume=True, log=lambda *_: None).run_dir
    if run.exists():
        shutil.rmtree(run)
    return train(recipe, run, log=lambda *_: None).run_dir


def evaluate_once(run: Path, subsets: list[str]) -> None:
    """eval-subsets on val and test, unless this run already has them."""
    table = run / "eval" / "subsets.csv"
    have = set(pd.read_csv(table)["split"]) if table.exists() else set()
    for split in ("val", "test"):
        if split not in have:
            run_eval_subsets(run, split, "best", subsets)


def evaluated(run: Path) -> bool:
    table = run / "eval" / "subsets.csv"
    return table.exists() and {"val", "test"} <= set(pd.read_csv(table)["split"])


def run_study(study: Study, store: Path, runs_dir: Path, seeds: list[int], configs: list[str],
              epochs: int, existing: bool = False) -> dict[str, list[Path]]:
    """Train and evaluate every configuration and oracle for every seed; returns config -> run dirs.
    `existing`: train nothing, take the evaluated runs there are (rows may then have different seeds;
    paired differences use the seeds both rows have)."""
    made: dict[str, list[Path]] = {}
    for seed in seeds:
        for config in configs:
            if existing and not evaluated(runs_dir / f"{config}-s{seed}"):
                continue
            start = time.monotonic()
            run = train_once(study.recipe, store, runs_dir / f"{config}-s{seed}", [*CONFIGS[config], f"train.seed={seed}", *study.overrides])
            evaluate_once(run, ["all", *study.selectors])
            made.setdefault(config, []).append(run)
            log(f"{study.name}: {config} seed {seed} ({time.monotonic() - start:.0f}s)")
        for oracle, groups in study.oracles.items():
            if existing and not evaluated(runs_dir / f"oracle-{oracle}-s{seed}"):
                continue
            overrides = [o for o in study.overrides if not o.startswith("modalities=")]
            run = train_once(study.recipe, store, runs_dir / f"oracle-{oracle}-s{seed}",
                             [f"modalities={groups}", "masking.strategy=uniform", f"train.seed={seed}", *overrides])
            evaluate_once(run, ["all"])
            made.setdefault(f"oracle-{oracle}", []).append(run)
    return made


def row_names(made: dict[str, list[Path]]) -> dict[str, str]:
    """run dir -> row name: the study names its configurations (compare would name them by recipe keys)."""
    return {str(r): LABELS.get(c, c) for c, runs in made.items() if not c.startswith("oracle-") for r in runs}


def study_tables(made: dict[str, list[Path]], split: str) -> pd.DataFrame:
    """Mean, std and count over seeds per (row, subset), with the study's row names."""
    runs = [r for rs in made.values() for r in rs]
    return compare_runs(runs, split=split, labels=row_names(made))


def paired_vs(made: dict[str, list[Path]], reference: str, split: str):
    """Per-seed paired differences `reference − other`, every non-oracle row."""
    runs = [r for c, rs in made.items() if not c.startswith("oracle-") for r in rs]
    return paired_comparison(runs, LABELS.get(reference, reference), split=split, labels=row_names(made))


def alone_shares(made: dict[str, list[Path]], groups: list[str]) -> pd.DataFrame:
    """Mean over epochs and seeds of the share of training samples that saw only modality m."""
    rows = {}
    for config, runs in made.items():
        if config.startswith("oracle-"):
            continue
        frames = [pd.read_csv(r / "metrics.csv") for r in runs]
        rows[LABELS.get(config, config)] = {g: float(np.mean([f[f"alone_{g}"].mean() for f in frames if f"alone_{g}" in f]))
                                            for g in groups}
    return pd.DataFrame(rows).T


def ratio_steps(made: dict[str, list[Path]]) -> pd.DataFrame:
    """For adaptive MIAM runs: how far r_m moved per monitor update (max |log r_t − log r_{t−1}|,
    as a factor), and the range of r_m over training, max over modalities, median over seeds."""
    rows = {}
    for config, runs in made.items():
        if not config.startswith("miam"):
            continue
        steps, spans = [], []
        for r in runs:
            imb = pd.read_csv(r / "imbalance.csv")
            logs = np.log(imb[[c for c in imb.columns if c.startswith("r_")]].to_numpy(dtype=float))
            steps.append(float(np.exp(np.abs(np.diff(logs, axis=0)).max())))
            spans.append(float(np.exp((logs.max(axis=0) - logs.min(axis=0)).max())))
        rows[LABELS.get(config, config)] = {"largest step (x)": float(np.median(steps)), "range of r_m (x)": float(np.median(spans))}
    return pd.DataFrame(rows).T


def markdown_table(frame: pd.DataFrame, fmt) -> str:
    lines = [f"| | {' | '.join(map(str, frame.columns))} |", "| --- |" + " --- |" * len(frame.columns)]
    lines += [f"| {idx} | {' | '.join(fmt(v) for v in row)} |" for idx, row in frame.iterrows()]
    return "\n".join(lines)


def gap_closed(mean: pd.DataFrame, label: str, weak: str) -> float:
    """Share of uniform's gap to the oracle on `weak` alone that `label` closes; NaN without an oracle."""
    if ORACLE not in mean.index or weak not in mean.columns:
        return float("nan")
    gap = mean.loc[ORACLE, weak] - mean.loc["uniform", weak]
    return float((mean.loc[label, weak] - mean.loc["uniform", weak]) / gap) if gap > 0 else float("nan")


def claim_lines(mean: pd.DataFrame, vs_best: dict, ref: str, best: str, weak: str, closed: float) -> list[str]:
    """Issue 13's criteria: the average at least every baseline's, with the paired interval against the
    best baseline not below 0; and the share of uniform's gap on the weak modality closed."""
    avg = vs_best["average"]
    if avg.verdict == "better":
        verdict = "holds at 95% confidence"
    elif avg.verdict == "tie":
        verdict = "a tie at 95% confidence (" + ("ahead on the mean" if avg.mean >= 0 else "behind on the mean") + ")"
    elif avg.verdict == "worse":
        verdict = "does not hold (worse at 95% confidence)"
    else:
        verdict = "one seed: no interval"
    weak_cell = vs_best[weak]
    return [f"- Average over subsets: {ref} {100 * mean.loc[ref, 'average']:.1f}, best baseline ({best}) "
            f"{100 * mean.loc[best, 'average']:.1f}; paired difference {format_paired_cell(avg)}: **{verdict}**.",
            f"- `{weak}` alone: oracle {100 * mean.loc[ORACLE, weak]:.1f}, uniform {100 * mean.loc['uniform', weak]:.1f}, "
            f"{ref} {100 * mean.loc[ref, weak]:.1f}: closes **{100 * closed:.0f}%** of uniform's gap "
            f"({100 * (mean.loc[ORACLE, weak] - mean.loc['uniform', weak]):.1f} points); against {best} there: {format_paired_cell(weak_cell)}."]


def report(study: Study, made: dict[str, list[Path]], out_dir: Path, reference: str, split: str) -> list[str]:
    """The study's section of results.md; tables also written under out_dir."""
    agg = study_tables(made, split)
    write_compare(agg, out_dir)
    mean, _, _ = wide_table(agg)
    groups = [c for c in mean.columns if "+" not in c and "[" not in c and c != "average"]
    ref = LABELS.get(reference, reference)
    paired = paired_vs(made, reference, split)
    write_paired(paired, out_dir)
    shares = alone_shares(made, groups)
    steps = ratio_steps(made)
    baselines = [lab for lab in mean.index if lab not in (ORACLE, ref) and not lab.startswith("miam")]
    best = max(baselines, key=lambda lab: mean.loc[lab, "average"])
    closed = gap_closed(mean, ref, study.weak)
    seeds = {LABELS.get(c, c): sorted(int(r.name.rsplit("-s", 1)[1]) for r in runs) for c, runs in made.items()}
    lines = [f"## {study.title}\n", (out_dir / "compare.md").read_text(),
             "Seeds per row: " + "; ".join(f"{lab} {', '.join(map(str, s))}" for lab, s in seeds.items()) + ".\n",
             f"### {ref} against every other row, seed by seed ({split} split)\n", (out_dir / "paired.md").read_text(),
             "### The claims, measured\n", f"**{ref}** (the reference row):\n",
             *claim_lines(mean, paired.rows[best], ref, best, study.weak, closed)]
    for other in [lab for lab in mean.index if lab.startswith("miam") and lab != ref]:
        lines += ["", f"**{other}**:\n", *claim_lines(mean, paired_vs(made, other, split).rows[best], other, best, study.weak,
                                                        gap_closed(mean, other, study.weak))]
    lines += ["", f"Share of the gap on `{study.weak}` closed, and the average, for every row:\n"]
    for lab in mean.index.drop([ORACLE, "uniform"], errors="ignore"):
        lines.append(f"- {lab}: {100 * gap_closed(mean, lab, study.weak):.0f}%; average {100 * mean.loc[lab, 'average']:.1f}")
    chain = [LABELS.get(c, c) for c in CHAIN if LABELS.get(c, c) in mean.index]
    lines += ["", "The ablation chain on `" + study.weak + "` alone and on the average: " +
              " → ".join(f"{lab} {100 * mean.loc[lab, study.weak]:.1f} / {100 * mean.loc[lab, 'average']:.1f}" for lab in chain) + ".", "",
              "Share of training samples in which only one modality was visible (mean over epochs and seeds):\n",
              markdown_table(shares, lambda v: f"{100 * v:.1f}%"), ""]
    if len(steps):
        lines += ["How much r_m moved: the largest change in one monitor update and the range over training "
                  "(factors, max over modalities, median over seeds):\n", markdown_table(steps, lambda v: f"{v:.1f}×"), ""]
    return lines


def pilot(study: Study, made: dict[str, list[Path]]) -> None:
    """Validation numbers only: what the choice of MIAM's settings may look at."""
    mean, _, _ = wide_table(study_tables(made, "val"))
    cols = [c for c in mean.columns if "+" not in c and "[" not in c]
    print(f"\n{study.name}: validation split, mean over seeds (x100)")
    print((100 * mean[cols]).round(1).to_string())
    for ref in [c for c in made if c.startswith("miam")]:
        if ref in made:
            res = paired_vs(made, ref, "val")
            print(f"{LABELS[ref]} minus: " + "; ".join(f"{o}: avg {format_paired_cell(c['average'])}, {study.weak} "
                                                      f"{format_paired_cell(c[study.weak])}" for o, c in res.rows.items()
                                                      if o in ("dropout", "opm", "uniform")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", nargs="*", default=["geoplant", "plateau", "taxabench"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--surveys", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--configs", nargs="*", default=None, help="configurations to train (default: all)")
    ap.add_argument("--oracles", nargs="*", default=None, help="oracles to train (default: every modality's)")
    ap.add_argument("--reference", default="miam-noise-whole", help="the MIAM row compared with every baseline")
    ap.add_argument("--existing", action="store_true", help="train nothing: report the finished runs under --work")
    ap.add_argument("--pilot", action="store_true", help="print validation numbers only; write nothing under docs/")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "reproduce-v3")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    args = ap.parse_args()
    start = time.monotonic()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    sections, trained = [], []
    for name in args.study:
        work = args.work / name
        study, store = make_study(name, work, args)
        if args.oracles is not None:
            study.oracles = {k: v for k, v in study.oracles.items() if k in args.oracles}
        configs = args.configs or study.configs
        made = run_study(study, store, work / "runs", seeds, configs, args.epochs, args.existing)
        trained += [r for rs in made.values() for r in rs]
        if args.pilot:
            pilot(study, made)
        else:
            sections += report(study, made, args.out.parent / "results" / name, args.reference, "test")
    if args.pilot:
        return
    minutes = (time.monotonic() - start) / 60
    train_minutes = sum(pd.read_csv(r / "metrics.csv")["seconds"].sum() for r in trained) / 60
    command = "python benchmarks/reproduce.py " + " ".join(sys.argv[1:])
    header = ["# Reproduction study (issue 13)\n",
              f"Regenerate with `{command.strip()}` (`make reproduce`; runs are reused from `--work`). "
              f"{len(trained)} models ({len(seeds)} seeds, {args.epochs} epochs each) took {train_minutes:.0f} minutes of "
              f"training on this 2-core machine; this pass took {minutes:.0f} minutes. The earlier study on generator v2 "
              "is in `docs/results-v2.md`. **The verdict on issue 13's criteria, and why, is in the discussion at the end "
              "of this page.**\n"]
    marker = "<!-- discussion -->"
    kept = args.out.read_text().split(marker, 1)[1] if args.out.exists() and marker in args.out.read_text() else ""
    args.out.write_text("\n".join(header + sections) + "\n" + (marker + kept if kept else ""))
    log(f"wrote {args.out} in {minutes:.1f} min")


if __name__ == "__main__":
    main()
