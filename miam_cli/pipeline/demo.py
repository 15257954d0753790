"""`miam demo`: the whole pipeline on synthetic data, each step a library call, each output kept.

synth -> prepare -> train (MIAM and uniform) -> eval-subsets (+ partial-input selectors) -> compare
-> attribute (modalities, bands, years, patches) -> maps (a synthetic landscape: species map and
Sentinel-2 contribution map, GeoTIFF + PNG) -> report.md + report.html.
Re-running skips the steps whose outputs exist, so an interrupted demo continues.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

from miam_cli.files import writable_folder
from miam_cli.recipe import load_recipe
from miam_cli.runs.rundir import RunDir


@dataclass
class DemoOptions:
    out: Path = Path("demo-out")
    surveys: int = 3000
    species: int = 16
    epochs: int | None = None
    strategies: tuple[str, ...] = ("miam", "uniform")
    seed: int = 0
    budget: int = 500  # coalition evaluations per sampled attribution report
    plot_format: str = "png"  # of the subset and attribution figures (the report embeds png and svg)
    overrides: list[str] = field(default_factory=list)
    maps: bool = True  # the landscape: prepare custom, train, `map` with and without contributions
    landscape_points: int = 2000


@dataclass
class DemoResult:
    out: Path
    report_md: Path
    report_html: Path
    runs: dict[str, Path]  # strategy -> run dir
    timings: dict[str, float]  # step -> seconds
    compare_md: str  # the strategies x subsets table (compare/compare.md)

    def to_json(self) -> dict:
        """The paths and timings (what `miam demo --json` prints)."""
        return {"out": str(self.out), "report_md": str(self.report_md), "report_html": str(self.report_html),
                "runs": {k: str(v) for k, v in self.runs.items()}, "timings": self.timings}


def demo_recipe_path(name: str = "demo") -> Path:
    return Path(str(resources.files("miam_cli") / "recipes" / f"{name}.yaml"))


def run_demo(opts: DemoOptions, log: Callable[[str], None] = print, progress=None) -> DemoResult:
    out = writable_folder(Path(opts.out), "--out folder")
    raw, store, runs = out / "data" / "geoplant", out / "stores" / "geoplant", out / "runs"
    timings: dict[str, float] = {}

    def step(name: str, fn):
        log(f"== {name}")
        start = time.monotonic()
        result = fn()
        timings[name] = time.monotonic() - start
        return result

    truth = step("synth", lambda: _synth(raw, opts, log))
    step("prepare", lambda: _prepare(raw, store, log))
    run_dirs = {s: step(f"train {s}", lambda s=s: _train(store, runs / s, s, opts, log, progress)) for s in opts.strategies}
    selectors = partial_selectors(truth)
    for s, run in run_dirs.items():
        step(f"eval-subsets {s}", lambda run=run: _eval(run, selectors, opts.plot_format))
    compare_md = step("compare", lambda: _compare(list(run_dirs.values()), out / "compare"))
    reports = step("attribute", lambda: _attribute(run_dirs[opts.strategies[0]], opts.budget, opts.plot_format, log))
    maps = step("maps", lambda: _maps(out, opts, log, progress)) if opts.maps else []
    from miam_cli.pipeline.report import write_report

    report_md, report_html = write_report(out, run_dirs, compare_md, reports, truth, timings, maps)
    return DemoResult(out, report_md, report_html, dict(run_dirs), timings, compare_md)


def partial_selectors(truth: dict) -> list[str]:
    """The paper's partial-input columns: one tabular variable, the centre patch, red+NIR, the event year."""
    year = truth.get("event_year", 2003)
    return ["all", "tabular[variable=bio1]", "sentinel2[patch=center]", "sentinel2[band=red,nir]", f"landsat[year={year}]"]


def _synth(raw: Path, opts: DemoOptions, log) -> dict:
    from miam_cli.synth.geoplant import synth_geoplant

    truth_file = raw / "truth.json"
    if truth_file.exists():
        truth = json.loads(truth_file.read_text())
        if truth.get("surveys") == opts.surveys and truth.get("seed") == opts.seed:
            log(f"reusing {raw}")
            return truth
    synth_geoplant(raw, surveys=opts.surveys, species=opts.species, seed=opts.seed)
    return json.loads(truth_file.read_text())


def _prepare(raw: Path, store: Path, log) -> None:
    from miam_cli.data.geoplant import GeoPlantOptions, plan_geoplant
    from miam_cli.data.prepare import run_prepare

    if (store / "store.json").exists():
        log(f"reusing {store}")
        return
    plan, decoder = plan_geoplant(raw, GeoPlantOptions())
    run_prepare(plan, decoder, store, workers=0)


def _train(store: Path, run: Path, strategy: str, opts: DemoOptions, log, progress) -> Path:
    overrides = [f"store={store}", f"masking.strategy={strategy}", f"train.seed={opts.seed}", *opts.overrides]
    if opts.epochs:
        overrides.append(f"train.epochs={opts.epochs}")
    return _train_once(load_recipe(demo_recipe_path(), overrides), run, log, progress)


def _train_once(recipe, run: Path, log, progress) -> Path:
    """Train `run`, continue it when an earlier demo was stopped mid-way, reuse it when it is finished."""
    from miam_cli.engine.signals import RUN_AGAIN, Stopped
    from miam_cli.engine.train import Preempted, train
    from miam_cli.runs.checkpoint import load_checkpoint

    rundir = RunDir(run)
    last = rundir.checkpoint("last")
    if last.exists() and rundir.checkpoint("best").exists() and rundir.metrics_file.exists() \
            and load_checkpoint(last)["progress"]["epoch"] >= recipe.train.epochs:
        log(f"reusing {run}")
        return run
    try:
        return train(recipe, run, resume=last.exists(), log=log, progress=progress).run_dir
    except Preempted as e:  # a stop signal during training: last.pt is written, the next demo continues from it
        raise Stopped(f"{e}; {RUN_AGAIN}") from None


def _eval(run: Path, selectors: list[str], plot_format: str) -> None:
    from miam_cli.evaluate.subsets import run_eval_subsets

    run_eval_subsets(run, "test", "best", selectors, plot_format=plot_format)


def _compare(runs: list[Path], out: Path) -> str:
    from miam_cli.evaluate.compare import compare_runs, write_compare

    _, md = write_compare(compare_runs(runs), out)
    return md.read_text()


def _attribute(run: Path, budget: int, plot_format: str, log) -> list:  # of AttributionReport
    from miam_cli.attribution.run import AttributionRequest, run_attribution

    # Bands, patches and years of one modality with the others masked (context none): the planted truths
    # are about what each modality carries, and beside the dominant tabular data Sentinel-2's values
    # shrink to ~1e-4 AUC, where noise sets the ranks (docs/results.md). ~500 coalition evaluations per
    # sampled report keep the demo to minutes; every report states its standard errors.
    requests = [AttributionRequest(plot_format=plot_format),
                AttributionRequest(modality="sentinel2", by="band", context="none", plot_format=plot_format),
                AttributionRequest(modality="sentinel2", by="patch", context="none", budget=budget, plot_format=plot_format),
                AttributionRequest(modality="landsat", by="year", context="none", budget=budget, plot_format=plot_format)]
    return [run_attribution(run, r, log=log) for r in requests]


def _maps(out: Path, opts: DemoOptions, log, progress) -> list[dict]:
    """The landscape (rasters + a Sentinel-2 mosaic) -> store -> MIAM run -> species map and Sentinel-2 contribution map."""
    from miam_cli import api
    from miam_cli.data.custom import load_spec, plan_custom
    from miam_cli.data.prepare import run_prepare
    from miam_cli.maps.quicklook import quicklook
    from miam_cli.synth.landscape import synth_landscape

    land, store, run, maps = out / "data" / "landscape", out / "stores" / "landscape", out / "runs" / "landscape", out / "maps"
    if not (land / "truth.json").exists():
        synth_landscape(land, points=min(opts.surveys, opts.landscape_points), seed=opts.seed)
    truth = json.loads((land / "truth.json").read_text())
    if not (store / "store.json").exists():
        plan, decoder = plan_custom(load_spec(land / "spec.yaml"), land / "spec.yaml")
        run_prepare(plan, decoder, store)
    overrides = [f"store={store}", f"train.seed={opts.seed}"] + ([f"train.epochs={opts.epochs}"] if opts.epochs else [])
    _train_once(load_recipe(demo_recipe_path("landscape"), overrides), run, log, progress)
    species = truth["ndvi_species"]
    made = []
    for name, contributions, bands, title in (
            ("landscape", False, [f"p({species[0]})", "richness", "coverage"], "species map: probability, richness, coverage"),
            ("landscape-shapley", True, [f"p({species[0]})", "shapley(sentinel2)", "shapley(env)"],
             f"where Sentinel-2 matters for species {species[0]} (exact Shapley per pixel)")):
        tif = maps / f"{name}.tif"
        if not tif.exists():
            api.predict_map(run, land / "map.yaml", out=tif, species=[species[0]], contributions=contributions, log=log)
        made.append({"title": title, "tif": tif, "png": quicklook(tif, maps / f"{name}.png", bands, title)})
    return made
