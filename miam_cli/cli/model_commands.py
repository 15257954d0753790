"""Model commands: validate, train (eval-subsets, compare, attribute and demo register beside them)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from miam_cli.cli.common import Progress, log, out, print_json, print_table


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_cmd)
    app.command("train")(train_cmd)


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
    import sys

    from miam_cli.engine.recipe import load_recipe
    from miam_cli.engine.train import PREEMPTED_EXIT_CODE, Preempted, train

    r = load_recipe(recipe, overrides or [])
    with Progress("train", None) as bar:
        def progress(epoch, step, steps):
            bar.update(step, steps, f"epoch {epoch + 1}/{r.train.epochs}")
        try:
            run = train(r, out_dir, resume=resume, progress=progress, log=log)
        except Preempted as e:
            log(f"preempted: {e}; continue with: miam train {recipe} --out <run dir> --resume")
            sys.exit(PREEMPTED_EXIT_CODE)
    import csv

    rows = list(csv.DictReader(open(run / "metrics.csv")))
    last = rows[-1] if rows else {}
    if json_out:
        print_json({"run_dir": str(run), "metrics": last})
    else:
        keep = [k for k in last if k.startswith(("epoch", "train_loss", "val_", "r_", "p_"))]
        print_table(f"run {run}", ["metric", "value"], [[k, last[k]] for k in keep])
        out.print(str(run))
