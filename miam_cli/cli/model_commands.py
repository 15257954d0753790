"""Model commands: validate, train (eval-subsets, compare, attribute and demo register beside them)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from miam_cli.attribution import defaults as attribution_defaults
from miam_cli.cli.common import Progress, attribution_progress, epoch_progress, log, out, print_json, print_table, use_threads
from miam_cli.cli.options import (BatchSize, Checkpoint, Device, JsonOut, Overrides, PlotFormat, RecipeArg, RunDirArg, Threads,
                                  merge_option, shard_option)

EvalShard, EvalMerge = shard_option("evaluate the I-th of N slices of the subset list"), merge_option("eval/subsets.csv")
AttributeShard, AttributeMerge = shard_option("run a slice of the samples"), merge_option("the report")


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_cmd)
    app.command("train")(train_cmd)
    app.command("eval-subsets")(eval_subsets_cmd)
    app.command("compare")(compare_cmd)
    app.command("attribute")(attribute_cmd)
    app.command("demo")(demo_cmd)


def validate_cmd(
    recipe: RecipeArg,
    overrides: Overrides = None,
    json_out: JsonOut = False,
) -> None:
    """Check a recipe (and its store) and list every error at once (exit 2).

    Example: miam validate recipes/geoplant.yaml masking.strategy=uniform
    """
    from miam_cli.store.reader import TokenStore

    path, r = _load_recipe(recipe, overrides)
    store_note = ""
    if Path(r.store).exists():
        groups = r.groups(TokenStore(r.store).modalities)
        described = ", ".join(g + "=" + "+".join(ms) for g, ms in groups.items())
        store_note = f"; masking modalities: {described}"
    else:
        log(f"note: store {r.store} does not exist yet (prepare it before training)")
    if json_out:
        print_json(r.model_dump(by_alias=True, mode="json"))
    else:
        from miam_cli.recipe import recipe_to_yaml

        out.print(recipe_to_yaml(r), highlight=False)
    log(f"{path}: valid{store_note}")


def _load_recipe(recipe: Path, overrides: list[str] | None):
    """Find the recipe (a file, or a packaged one by name), say which file it is, and validate it."""
    from miam_cli.recipe import load_recipe
    from miam_cli.packaged import find_recipe

    from miam_cli.engine import dist

    found = find_recipe(recipe)
    if dist.resolve().is_main:  # under torchrun every rank runs this: one line per job
        log(f"recipe: {found.path}" + (f" (packaged with miam; `miam recipes cp {found.path.stem}` copies it here to edit)"
                                       if found.packaged else ""))
    return found.path, load_recipe(found.path, overrides or [])


def train_cmd(
    recipe: RecipeArg,
    overrides: Overrides = None,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run dir [default: runs/<name>-<strategy>-<time>]"),
    resume: bool = typer.Option(False, help="Continue the run in --out from checkpoints/last.pt."),
    oracle: Optional[List[str]] = typer.Option(
        None, "--oracle", help="Train an oracle: this masking modality alone (repeat, or a,b, for several), with uniform masking; "
                               "`compare` shows it as the oracle row."),
    threads: Threads = None,
    json_out: JsonOut = False,
) -> None:
    """Train a model with the recipe's masking strategy; writes a run dir (its path is printed first).

    Example: miam train recipes/demo.yaml masking.strategy=uniform train.epochs=5 --out runs/demo-uniform

    Oracle (the reference on one modality): miam train recipes/demo.yaml --oracle sentinel2

    On SIGUSR1/SIGTERM (SLURM before a time limit) it writes last.pt and exits 75; the message names
    the command that continues the run (`--resume`).
    """
    from miam_cli.engine.signals import deferred_stop_signals

    with deferred_stop_signals():  # first, before torch is imported: a SIGTERM during start-up still exits 75
        result = _train(recipe, overrides or [], out_dir, resume, oracle, threads)
    if result is not None:
        _print_train_result(result, json_out)


def _train(recipe: Path, overrides: list[str], out_dir: Optional[Path], resume: bool, oracle: Optional[List[str]],
           threads: Optional[int]):
    """The `TrainResult` on rank 0 (None on other ranks); exit 75 when preempted."""
    import sys

    from miam_cli.engine import dist
    from miam_cli.recipe import oracle_override
    from miam_cli.engine.train import PREEMPTED_EXIT_CODE, Preempted, train

    _, r = _load_recipe(recipe, [*overrides, *([oracle_override(oracle)] if oracle else []),
                                 *([f"train.threads={threads}"] if threads else [])])
    with Progress("train", None) as bar:
        try:
            result = train(r, out_dir, resume=resume, progress=epoch_progress(bar), log=log)
        except Preempted as e:
            if dist.resolve().is_main:
                log(f"preempted: {e}; continue with: {e.resume_command}")
            sys.exit(PREEMPTED_EXIT_CODE)
    return result if dist.resolve().is_main else None  # one result table per job, not one per rank


def _print_train_result(result, json_out: bool) -> None:
    last, run = result.metrics, result.run_dir
    if json_out:
        print_json({"run_dir": str(run), "metrics": last})
    else:
        keep = [k for k in last if k.startswith(("epoch", "train_loss", "val_", "r_", "p_"))]
        print_table(f"run {run}", ["metric", "value"], [[k, "" if last[k] is None else last[k]] for k in keep])
        out.print(str(run))


def eval_subsets_cmd(
    run_dir: RunDirArg = None,
    split: str = typer.Option("test", help="train | val | test"),
    checkpoint: Checkpoint = "best",
    subsets: Optional[List[str]] = typer.Option(None, "--subsets", help="all (default) | unimodal | a selector such as 'sentinel2[band=red,nir]'; repeat for several"),
    shard: EvalShard = None,
    merge: EvalMerge = False,
    batch_size: BatchSize = 1024,
    device: Device = "auto",
    plot_format: PlotFormat = "png",
    threads: Threads = None,
    json_out: JsonOut = False,
) -> None:
    """Evaluate a trained model on every non-empty subset of its modalities (2^M - 1), or on selectors.

    Example: miam eval-subsets runs/demo-miam --subsets all --subsets 'sentinel2[band=red,nir]'
    """
    from miam_cli import api
    from miam_cli.scoring.metrics import metric_names
    from miam_cli.evaluate.subsets import table_records
    from miam_cli.plotstyle import check_format
    from miam_cli.runs.find import resolve_run
    from miam_cli.shards import requested_shard

    run = resolve_run(run_dir, log)
    with Progress("eval-subsets", None) as bar:
        res = api.evaluate_subsets(api.load_run(run, checkpoint, device), split=split, subsets=subsets, shard=requested_shard(shard, merge, log),
                                   merge=merge, batch_size=batch_size, progress=bar.update, plot_format=check_format(plot_format),
                                   threads=threads, log=log)
    table, path = res.table, res.path
    log(f"wrote {path}")
    if json_out:
        print_json({"run_dir": str(run), "file": str(path), "metrics": table.attrs.get("metrics"), "rows": table_records(table)})
        return
    cols = ["subset", "visible_tokens", "samples"] + metric_names(table.columns)
    print_table(f"{run} on {split} ({checkpoint}.pt)", cols, table[cols].values.tolist(), table.attrs.get("metrics"))


def compare_cmd(
    run_dirs: List[Path] = typer.Argument(..., help="Run dirs, each with eval/subsets.csv; `runs/demo-miam-...` is the newest run whose name starts so"),
    subsets: Optional[List[str]] = typer.Option(None, "--subsets", help="Only these columns (subset labels)"),
    metric: Optional[str] = typer.Option(None, help="Metric column [default: auc or top1]"),
    split: str = typer.Option("test", help="Rows of eval/subsets.csv from this split (val: to choose settings without the test split)"),
    out_dir: Path = typer.Option(Path("compare"), "--out", help="Where compare.csv and compare.md go"),
    json_out: JsonOut = False,
    paired: Optional[str] = typer.Option(
        None, "--paired", metavar="ROW",
        help="Also compare ROW (e.g. miam) with every other row seed by seed: mean difference and 95% interval "
             "on the average and on each modality alone (runs of the same seeds; writes paired.csv/.md)"),
) -> None:
    """The paper's Table 1: strategies (rows) x input subsets (columns) + average, best per column marked.

    Example: miam compare runs/demo-miam runs/demo-uniform runs/oracle-sentinel2
    """
    from miam_cli.cli.common import warn
    from miam_cli.evaluate.compare import caption, format_cell
    from miam_cli.evaluate.comparison import run_compare
    from miam_cli.runs.find import resolve_run

    res = run_compare([resolve_run(r, log) for r in run_dirs], subsets, metric, split, out_dir, paired)
    for w in res.warnings:
        warn(w)
    for table, text in zip(res.files[::2], res.files[1::2]):  # compare.csv/.md, then paired.csv/.md
        log(f"wrote {table} and {text}")
    mean, std, columns, best = res.mean, res.std, res.columns, res.best
    if json_out:
        print_json({"metric": res.metric, "columns": columns, "best": best, "warnings": res.warnings,
                    "rows": [{"strategy": label, **{c: {"mean": _num(mean.loc[label, c]), "std": _num(std.loc[label, c])} for c in columns}}
                             for label in mean.index],
                    **({"paired": res.paired.table().to_dict(orient="records")} if res.paired else {})})
        return
    rows = [[label] + [format_cell(mean.loc[label, c], std.loc[label, c], best.get(c) == label, False) for c in columns] for label in mean.index]
    print_table(f"{res.metric} x 100 on {split}", ["strategy"] + columns, rows, caption(res.long, False))
    if res.paired:
        from miam_cli.evaluate.paired import format_paired_cell

        result = res.paired
        print_table(f"{result.reference} minus each row, x 100: mean [95% interval] over paired seeds (▲ better, ▼ worse, = tie)",
                    ["row"] + result.columns,
                    [[other] + [format_paired_cell(cells[c]) for c in result.columns] for other, cells in result.rows.items()])


def _num(x):
    import math

    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def attribute_cmd(
    run_dir: RunDirArg = None,
    modality: Optional[str] = typer.Option(None, help="Explain the tokens of this modality (default: the modalities themselves)"),
    by: Optional[str] = typer.Option(None, help="Axis grouping the tokens: band | year | patch | variable | token [default: the modality's first]"),
    target: str = typer.Option("global", help="global (the split's metric) | loss (minus the mean loss) | a class index, id or name"),
    split: str = typer.Option("test", help="train | val | test"),
    context: str = typer.Option("all", help="all: other modalities visible | none: masked"),
    budget: int = typer.Option(attribution_defaults.BUDGET, min=1, help="Most coalition evaluations when sampling"),
    tolerance: str = typer.Option(str(attribution_defaults.TOLERANCE), help="Stop sampling once the largest standard error is at most this: in the "
                                  "target's units (AUC, top-1, -loss, probability), or a percentage of |v(all) - v(none)| such as 5%, or both "
                                  "(whichever is larger)"),
    seed: int = typer.Option(0, help="Seed of the sampled coalitions"),
    sampler: str = typer.Option("kernel", help="Above --exact-max players: kernel (paired KernelSHAP) | permutation (antithetic)"),
    exact_max: int = typer.Option(10, min=1, max=16, help="Exact Shapley (all 2^P coalitions) up to this many players"),
    max_samples: Optional[int] = typer.Option(None, min=1, help="Use at most this many samples of the split"),
    shard: AttributeShard = None,
    merge: AttributeMerge = False,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Report folder [default: RUN_DIR/attribution]"),
    device: Device = "auto",
    plot_format: PlotFormat = "png",
    threads: Threads = None,
    json_out: JsonOut = False,
) -> None:
    """Shapley contributions of modalities, or of one modality's bands, years, patches or variables.

    Example: miam attribute runs/demo-miam --modality sentinel2 --by band
    """
    from miam_cli import api
    from miam_cli.attribution.report import evaluation_count
    from miam_cli.plotstyle import check_format
    from miam_cli.runs.find import resolve_run
    from miam_cli.shards import requested_shard

    run = resolve_run(run_dir, log)
    with Progress("attribute") as bar:
        res = api.attribute(api.load_run(run, "best", device), modality=modality, by=by, target=target, split=split, context=context,
                            budget=budget, tolerance=tolerance, seed=seed, exact_max=exact_max, max_samples=max_samples,
                            sampler=sampler, shard=requested_shard(shard, merge, log), merge=merge, out=out_dir,
                            plot_format=check_format(plot_format), threads=threads, log=log,
                            progress=None if merge else attribution_progress(bar))
    if res.shard_file is not None:
        log(f"wrote {res.shard_file}; pool the shards with --merge")
        return
    result, eff, report = res.result, res.efficiency, res.path.with_suffix("")
    log(f"wrote {report}.csv, .json, .{plot_format} and summary.md")
    if json_out:
        print_json({"report": str(report), "meta": res.meta, "efficiency": eff, **result.to_dict()})
        return
    order = sorted(range(len(result.players)), key=lambda i: -result.values[i])
    rows = [[result.players[i], float(result.values[i]), float(result.std_errors[i])] for i in order]
    caption = (f"{result.method}, {evaluation_count(result)}; efficiency: sum phi = {eff['sum_phi']:.4f}, "
               f"v(all) - v(none) = {eff['v_all_minus_v_none']:.4f}")
    print_table(f"Shapley values: {res.meta['target']} ({report.name})", ["player", "phi", "std error"], rows, caption)


def demo_cmd(
    out_dir: Path = typer.Option(Path("demo-out"), "--out", help="Where everything goes (data, store, runs, report)"),
    surveys: int = typer.Option(3000, min=100, help="Synthetic surveys"),
    species: int = typer.Option(16, min=2, help="Synthetic species"),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epochs per model [default: the demo recipe's]"),
    seed: int = typer.Option(0, help="Seed of the data and of training"),
    budget: int = typer.Option(500, min=50, help="Coalition evaluations per sampled attribution report (patches, years)"),
    maps: bool = typer.Option(True, "--maps/--no-maps", help="Also the map demo: a synthetic landscape, its species map and Sentinel-2 contribution map."),
    plot_format: PlotFormat = "png",
    threads: Threads = None,
    json_out: JsonOut = False,
) -> None:
    """The whole pipeline on synthetic data: synth, prepare, train MIAM and uniform, eval-subsets, compare, attribute, map, report.

    Example: miam demo --out demo-out

    Interrupted (SIGTERM/SIGUSR1: exit 75), the same command continues: finished steps are kept.
    """
    from miam_cli.engine.signals import stop_signals_raise

    with stop_signals_raise():  # first (torch loads next, for seconds): SIGTERM exits 75, the same command continues
        from miam_cli.pipeline.demo import DemoOptions, run_demo
        from miam_cli.plotstyle import check_format

        use_threads(threads)
        with Progress("train", None) as bar:
            res = run_demo(DemoOptions(out_dir, surveys, species, epochs, seed=seed, budget=budget,
                                       plot_format=check_format(plot_format), maps=maps), log=log, progress=epoch_progress(bar))
    if json_out:
        print_json(res.to_json())
        return
    out.print(res.compare_md, highlight=False, markup=False)
    log(f"report: {res.report_md}")
    out.print(str(res.report_html))
