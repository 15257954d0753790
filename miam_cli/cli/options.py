"""What the commands share in their declarations: the typer app class and the options used by several commands.

One definition per option, so that the help of `--json`, `--device`, `--shard` or `--threads` cannot drift
between commands. `--shard` and `--merge` name what a command splits, so they are made by a function.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from typer.core import TyperCommand

_REQUIRED = re.compile(r"\{(\w+)\}")
_OPTIONAL = re.compile(r"\[(\w+)\]")


class MiamCommand(TyperCommand):
    """Usage lines in the convention of every man page, `miam train [OPTIONS] RECIPE [OVERRIDES]...`
    (typer >= 0.26 writes required arguments as `{recipe}`, which reads like a placeholder to fill)."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [_OPTIONAL.sub(lambda m: f"[{m[1].upper()}]", _REQUIRED.sub(lambda m: m[1].upper(), p)) if p != "[OPTIONS]" else p
                for p in pieces]


class App(typer.Typer):
    """A typer app whose commands use `MiamCommand`."""

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or MiamCommand, **kwargs)


# ------------------------------------------------------------------ shared declarations
RecipeArg = Annotated[Path, typer.Argument(
    help="Recipe YAML, or the name of a packaged recipe (demo, geoplant, taxabench; `miam recipes list`).", show_default=False)]
Overrides = Annotated[Optional[List[str]], typer.Argument(help="Dotted overrides KEY=VALUE, e.g. masking.lambda=2 train.epochs=5")]
RunDirArg = Annotated[Optional[Path], typer.Argument(
    help="Run dir [default: the newest under runs/]; `runs/demo-miam-...` means the newest run whose name starts so")]
JsonOut = Annotated[bool, typer.Option("--json", help="One JSON document on stdout instead of text.")]
PlotFormat = Annotated[str, typer.Option(
    "--plot-format", help="png (200 dpi) | svg | pdf: the format of the figures written", metavar="png|svg|pdf")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda")]
Checkpoint = Annotated[str, typer.Option(help="best | last")]
BatchSize = Annotated[int, typer.Option(min=1, help="Samples (pixels) per forward pass.")]
# Every command that computes takes --threads; see miam_cli.threads
Threads = Annotated[Optional[int], typer.Option(
    "--threads", min=1, help="CPU threads in all [default: SLURM_CPUS_PER_TASK, else OMP_NUM_THREADS, else the CPUs this "
                             "process may use], shared among worker processes and the ranks torchrun starts on a node.")]


def shard_option(work: str):
    """`--shard I/N` of a command that runs the I-th of N parts of `work`, e.g. "evaluate the I-th of N slices of the subset list"."""
    return Annotated[Optional[str], typer.Option(help=f"I/N: {work} (0-based); default from SLURM_ARRAY_TASK_ID/COUNT.")]


def merge_option(into: str):
    """`--merge` of a shardable command: what joining the shards' files makes."""
    return Annotated[bool, typer.Option(help=f"Join the shard files into {into}.")]
