"""What the commands share in their declarations: the typer app class and the options used by several commands.

One definition per option, so that the help of `--json` or `--plot-format` cannot drift between commands.
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
JsonOut = Annotated[bool, typer.Option("--json", help="One JSON document on stdout instead of a table.")]
PlotFormat = Annotated[str, typer.Option(
    "--plot-format", help="png (200 dpi) | svg | pdf: the format of the figures written", metavar="png|svg|pdf")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda")]
