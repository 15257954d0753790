"""Model commands: validate, train (eval-subsets, compare, attribute and demo register beside them)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from miam_cli.cli.common import Progress, log, out, print_json, print_table


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_cmd)
    app.command("train")(train_cmd)
    app.command("eval-subsets")(eval_subsets_cmd)
    app.command("compare")(compare_cmd)
    app.command("attribute")(attribute_cmd)
    app.command("demo")(demo_cmd)


def validate_cmd(
    recipe: Path = typer.Argument(..., help="Recipe YAML."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Dotted overrides KEY=VALUE, e.g. masking.lam=2 train.epochs=5"),
    json_out: bool = typer.Option(False, "--json", help="Print the resolved recipe as JSON."),
) -> None:
    """Check a recipe (and its store) and list every error at once (exit 2).

    Example: miam validate recipes/geoplant.yaml masking.strategy=uniform
    """
    from miam_cli.engine.recipe import load_recipe, recipe_to_yaml
    from miam_cli.store.reader import TokenStore

    r = load_recipe(recipe, overrides or [])
    store_note = ""
    if Path(r.store).exists():
        groups = r.groups(TokenStore(r.store).modalities)
        described = ", ".join(g + "=" + "+".join(ms) for g, ms in groups.items())
        store_note = f"; masking modalities: {described}"
    else:
        log(f"note: store {r.store} does not exist yet (prepare it before training)")
    if json_out:
        print_json(r.dump())
    else:
        out.print(recipe_to_yaml(r), highlight=False)
    log(f"{recipe}: valid{store_note}")


def train_cmd(
    recipe: Path = typer.Argument(..., help="Recipe YAML."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Dotted overrides KEY=VALUE, e.g. masking.lam=2 train.epochs=5"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run dir [default: runs/<name>-<strategy>-<time>]"),
    resume: bool = typer.Option(False, help="Continue the run in --out from checkpoints/last.pt."),
    json_out: bool = typer.Option(False, "--json", help="Print the final epoch's metrics as JSON."),
) -> None:
    """Train a model with the recipe's masking strategy; writes a run dir.

    Example: miam train recipes/demo.yaml masking.strategy=uniform train.epochs=5 --out runs/demo-uniform
    On SIGUSR1/SIGTERM (SLURM before a time limit) it writes last.pt and exits 75; run again with --resume.
    """
    from miam_cli.engine.signals import deferred_stop_signals

    with deferred_stop_signals():  # first, before torch is imported: a SIGTERM during start-up still exits 75
        run = _train(recipe, overrides or [], out_dir, resume)
    if run is not None:
        _print_train_result(run, json_out)


def _train(recipe: Path, overrides: list[str], out_dir: Optional[Path], resume: bool) -> Optional[Path]:
    """The run dir on rank 0 (None on other ranks); exit 75 when preempted."""
    import sys

    from miam_cli.engine import dist
    from miam_cli.engine.recipe import load_recipe
    from miam_cli.engine.train import PREEMPTED_EXIT_CODE, Preempted, train

    r = load_recipe(recipe, overrides)
    with Progress("train", None) as bar:
        def progress(epoch, step, steps):
            bar.update(step, steps, f"epoch {epoch + 1}/{r.train.epochs}")
        try:
            run = train(r, out_dir, resume=resume, progress=progress, log=log)
        except Preempted as e:
            if dist.resolve().is_main:
                log(f"preempted: {e}; continue with: miam train {recipe} --out <run dir> --resume")
            sys.exit(PREEMPTED_EXIT_CODE)
    return run if dist.resolve().is_main else None  # one result table per job, not one per rank


def _print_train_result(run: Path, json_out: bool) -> None:
    import csv

    rows = list(csv.DictReader(open(run / "metrics.csv")))
    last = rows[-1] if rows else {}
    if json_out:
        print_json({"run_dir": str(run), "metrics": last})
    else:
        keep = [k for k in last if k.startswith(("epoch", "train_loss", "val_", "r_", "p_"))]
        print_table(f"run {run}", ["metric", "value"], [[k, _as_number(last[k])] for k in keep])
        out.print(str(run))


def eval_subsets_cmd(
    run_dir: Optional[Path] = typer.Argument(None, help="Run dir [default: the newest under runs/]"),
    split: str = typer.Option("test", help="train | val | test"),
    checkpoint: str = typer.Option("best", help="best | last"),
    subsets: Optional[List[str]] = typer.Option(None, "--subsets", help="all (default) | unimodal | a selector such as 'sentinel2[band=red,nir]'; repeat for several"),
    shard: Optional[str] = typer.Option(None, help="I/N: evaluate the I-th of N slices of the subset list (0-based); default from SLURM_ARRAY_TASK_ID/COUNT"),
    merge: bool = typer.Option(False, help="Join the shard files into eval/subsets.csv."),
    batch_size: int = typer.Option(1024, min=1),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    json_out: bool = typer.Option(False, "--json", help="One JSON document instead of a table."),
) -> None:
    """Evaluate a trained model on every non-empty subset of its modalities (2^M - 1), or on selectors.

    Example: miam eval-subsets runs/demo-miam --subsets all --subsets 'sentinel2[band=red,nir]'
    """
    from miam_cli.cli.common import resolve_run, shard_from_env
    from miam_cli.evaluate.subsets import run_eval_subsets, table_records
    from miam_cli.store.writer import parse_shard

    run = resolve_run(run_dir)
    shard_text = None if merge else shard_from_env(shard)
    with Progress("eval-subsets", None) as bar:
        table, path = run_eval_subsets(run, split, checkpoint, subsets, parse_shard(shard_text) if shard_text else None, merge,
                                       batch_size, _device(device), progress=bar.update)
    log(f"wrote {path}")
    if json_out:
        print_json({"run_dir": str(run), "file": str(path), "rows": table_records(table)})
        return
    metric_cols = [c for c in ("auc", "auc_classes", "f1_25", "recall_25", "top1", "top5") if c in table.columns]
    cols = ["subset", "visible_tokens", "samples"] + metric_cols
    print_table(f"{run} on {split} ({checkpoint}.pt)", cols, table[cols].values.tolist())


def compare_cmd(
    run_dirs: List[Path] = typer.Argument(..., help="Run dirs, each with eval/subsets.csv"),
    subsets: Optional[List[str]] = typer.Option(None, "--subsets", help="Only these columns (subset labels)"),
    metric: Optional[str] = typer.Option(None, help="Metric column [default: auc or top1]"),
    split: str = typer.Option("test", help="Rows of eval/subsets.csv from this split (val: to choose settings without the test split)"),
    out_dir: Path = typer.Option(Path("compare"), "--out", help="Where compare.csv and compare.md go"),
    json_out: bool = typer.Option(False, "--json", help="One JSON document instead of a table."),
    paired: Optional[str] = typer.Option(
        None, "--paired", metavar="ROW",
        help="Also compare ROW (e.g. miam) with every other row seed by seed: mean difference and 95% interval "
             "on the average and on each modality alone (runs of the same seeds; writes paired.csv/.md)"),
) -> None:
    """The paper's Table 1: strategies (rows) x input subsets (columns) + average, best per column marked.

    Example: miam compare runs/demo-miam runs/demo-uniform runs/oracle-sentinel2
    """
    from miam_cli.evaluate.compare import best_per_column, compare_runs, format_cell, wide_table, write_compare

    agg = compare_runs(run_dirs, subsets, metric, split)
    csv_path, md_path = write_compare(agg, out_dir)
    log(f"wrote {csv_path} and {md_path}")
    mean, std, columns = wide_table(agg)
    best = best_per_column(mean)
    result = _paired(run_dirs, paired, subsets, metric, split, out_dir) if paired else None
    if json_out:
        print_json({"metric": agg.attrs["metric"], "columns": columns, "best": best,
                    "rows": [{"strategy": label, **{c: {"mean": _num(mean.loc[label, c]), "std": _num(std.loc[label, c])} for c in columns}}
                             for label in mean.index],
                    **({"paired": result.table().to_dict(orient="records")} if result else {})})
        return
    rows = [[label] + [format_cell(mean.loc[label, c], std.loc[label, c], best.get(c) == label, False) for c in columns] for label in mean.index]
    print_table(f"{agg.attrs['metric']} x 100 (* = best per column)", ["strategy"] + columns, rows)
    if result:
        from miam_cli.evaluate.paired import format_paired_cell

        print_table(f"{result.reference} minus each row, x 100: mean [95% interval] over paired seeds (▲ better, ▼ worse, = tie)",
                    ["row"] + result.columns,
                    [[other] + [format_paired_cell(cells[c]) for c in result.columns] for other, cells in result.rows.items()])


def _paired(run_dirs, reference, subsets, metric, split, out_dir):
    from miam_cli.evaluate.paired import paired_comparison, write_paired

    result = paired_comparison(run_dirs, reference, subsets, None, metric, split)
    csv_path, md_path = write_paired(result, out_dir)
    log(f"wrote {csv_path} and {md_path}")
    return result


def _as_number(text: str):
    """metrics.csv cells are text: numbers print as numbers, the rest as is."""
    try:
        return int(text) if text.isdigit() else float(text)
    except ValueError:
        return text


def _num(x):
    import math

    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _device(name: str) -> str:
    from miam_cli.engine.device import resolve_device

    return str(resolve_device(name))


def attribute_cmd(
    run_dir: Optional[Path] = typer.Argument(None, help="Run dir [default: the newest under runs/]"),
    modality: Optional[str] = typer.Option(None, help="Explain the tokens of this modality (default: the modalities themselves)"),
    by: Optional[str] = typer.Option(None, help="Axis grouping the tokens: band | year | patch | variable | token [default: the modality's first]"),
    target: str = typer.Option("global", help="global (the split's metric) | loss (minus the mean loss) | a class index, id or name"),
    split: str = typer.Option("test", help="train | val | test"),
    context: str = typer.Option("all", help="all: other modalities visible | none: masked"),
    budget: int = typer.Option(2000, min=1, help="Most coalition evaluations when sampling"),
    tolerance: float = typer.Option(0.01, min=0.0, help="Stop sampling when the largest standard error < tolerance x spread of values"),
    seed: int = typer.Option(0, help="Seed of the sampled coalitions"),
    sampler: str = typer.Option("kernel", help="Above --exact-max players: kernel (paired KernelSHAP) | permutation (antithetic)"),
    exact_max: int = typer.Option(10, min=1, max=16, help="Exact Shapley (all 2^P coalitions) up to this many players"),
    max_samples: Optional[int] = typer.Option(None, min=1, help="Use at most this many samples of the split"),
    shard: Optional[str] = typer.Option(None, help="I/N: run a slice of the samples (0-based); default from SLURM_ARRAY_TASK_ID/COUNT"),
    merge: bool = typer.Option(False, help="Pool the shard files into the report"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Report folder [default: RUN_DIR/attribution]"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    json_out: bool = typer.Option(False, "--json", help="One JSON document instead of a table."),
) -> None:
    """Shapley contributions of modalities, or of one modality's bands, years, patches or variables.

    Example: miam attribute runs/demo-miam --modality sentinel2 --by band
    """
    from miam_cli.attribution.run import AttributionRequest, merge_attribution, run_attribution
    from miam_cli.cli.common import resolve_run, shard_from_env
    from miam_cli.store.writer import parse_shard

    run = resolve_run(run_dir)
    shard_text = None if merge else shard_from_env(shard)
    req = AttributionRequest(modality, by, target, split, context, budget, tolerance, seed, exact_max, max_samples,
                             parse_shard(shard_text) if shard_text else None, sampler)
    if merge:
        res = merge_attribution(run, req, out_dir, _device(device))
    else:
        res = run_attribution(run, req, out_dir, _device(device), log=log)
    if "shard_file" in res:
        log(f"wrote {res['shard_file']}; pool the shards with --merge")
        return
    result, eff = res["result"], res["efficiency"]
    log(f"wrote {res['dir']}/{res['stem']}.csv, .json, .png and summary.md")
    if json_out:
        print_json({"report": f"{res['dir']}/{res['stem']}", "meta": res["meta"], "efficiency": eff, **result.to_dict()})
        return
    order = sorted(range(len(result.players)), key=lambda i: -result.values[i])
    rows = [[result.players[i], float(result.values[i]), float(result.std_errors[i])] for i in order]
    caption = (f"{result.method}, {result.evaluations} coalition evaluations; efficiency: sum phi = {eff['sum_phi']:.4f}, "
               f"v(all) - v(none) = {eff['v_all_minus_v_none']:.4f}")
    print_table(f"Shapley values: {res['meta']['target']} ({res['stem']})", ["player", "phi", "std error"], rows, caption)


def demo_cmd(
    out_dir: Path = typer.Option(Path("demo-out"), "--out", help="Where everything goes (data, store, runs, report)"),
    surveys: int = typer.Option(3000, min=100, help="Synthetic surveys"),
    species: int = typer.Option(16, min=2, help="Synthetic species"),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epochs per model [default: the demo recipe's]"),
    seed: int = typer.Option(0, help="Seed of the data and of training"),
    budget: int = typer.Option(500, min=50, help="Coalition evaluations per sampled attribution report (patches, years)"),
    json_out: bool = typer.Option(False, "--json", help="Print the paths and timings as JSON."),
) -> None:
    """The whole pipeline on synthetic data: synth, prepare, train MIAM and uniform, eval-subsets, compare, attribute, report.

    Example: miam demo --out demo-out
    """
    from miam_cli.pipeline.demo import DemoOptions, run_demo

    with Progress("train", None) as bar:
        res = run_demo(DemoOptions(out_dir, surveys, species, epochs, seed=seed, budget=budget), log=log,
                       progress=lambda e, s, n: bar.update(s, n, f"epoch {e + 1}"))
    if json_out:
        print_json(res)
        return
    out.print((Path(res["out"]) / "compare" / "compare.md").read_text(), highlight=False, markup=False)
    log(f"report: {res['report_md']}")
    out.print(res["report_html"])
