"""The `miam` command: a thin typer shell over the library; see docs/cli.md for the reference."""

from __future__ import annotations

import sys

import typer

from miam_cli.cli import data_commands, model_commands, packaged_commands, predict_commands
from miam_cli.cli.options import App
from miam_cli.engine.signals import Stopped
from miam_cli.errors import RuntimeFailure, UserError

app = App(
    name="miam",
    help=(
        "MIAM toolkit: prepare multimodal ecological data, train transformers with Modality "
        "Imbalance-Aware Masking, evaluate on every subset of modalities, explain with Shapley values.\n\n"
        "Example: miam demo"
    ),
    no_args_is_help=True,
    add_completion=True,  # `miam --install-completion` (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_commands.register(app)
packaged_commands.register(app)
model_commands.register(app)
predict_commands.register(app)


def _version(value: bool) -> None:
    if value:
        from miam_cli import __version__

        print(f"miam {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")) -> None:
    """MIAM toolkit: prepare multimodal ecological data, train transformers with Modality Imbalance-Aware
    Masking, evaluate on every subset of modalities, explain with Shapley values.

    Example: miam demo
    """


INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as shells report it


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line on stderr and exit 2, never a traceback; known runtime
    failures exit 1 with one line; anything unexpected exits 1 with one line and the traceback in a log
    file (see `last_resort`). Typer runs without its standalone mode so that every exception, EOFError
    included (click would turn it into a bare "Aborted!"), reaches these handlers."""
    from rich.markup import escape

    from miam_cli.cli.common import err
    from miam_cli.cli.last_resort import click_module, command_name, report_unexpected
    from miam_cli.threads import set_wait_policy

    set_wait_policy()  # OpenMP reads it once, when torch loads: before any command imports torch

    click = click_module()

    args = list(sys.argv[1:] if argv is None else argv)

    def command() -> str:  # `miam prepare geoplant`: the command the messages name
        return command_name(typer.main.get_command(app), args)

    try:
        code = app(args=args, prog_name="miam", standalone_mode=False)
    except click.exceptions.ClickException as e:  # bad usage: click's own message (exit 2)
        e.show()
        sys.exit(e.exit_code)
    except UserError as e:
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(2)
    except RuntimeFailure as e:
        err.print(f"[red]failed:[/] {escape(str(e))}", highlight=False)
        sys.exit(1)
    except Stopped as e:  # a stop signal in a command that continues when run again
        err.print(f"[yellow]stopped:[/] {escape(str(e))}", highlight=False)
        sys.exit(e.exit_code)
    except typer.Abort as e:  # click's wrapping of an EOFError or a Ctrl-C raised inside a command
        if isinstance(e.__cause__, KeyboardInterrupt):
            _interrupted(command(), err)
        report_unexpected(command(), args, e.__cause__ or e, err)
        sys.exit(1)
    except KeyboardInterrupt:  # a Ctrl-C outside click's own handling (while the command line is parsed)
        _interrupted(command(), err)
    except Exception as e:
        report_unexpected(command(), args, e, err)
        sys.exit(1)
    if code == INTERRUPTED_EXIT_CODE:  # typer >= 0.13 turns a Ctrl-C inside a command into this code, silently
        _interrupted(command(), err)
    sys.exit(code if isinstance(code, int) else 0)


def _interrupted(command: str, err) -> None:
    """Ctrl-C is the user's choice, not a crash: one line, no log file, the shell's exit code for SIGINT."""
    from rich.markup import escape

    err.print(f"[yellow]interrupted:[/] {escape(command)} (Ctrl-C)", highlight=False)
    sys.exit(INTERRUPTED_EXIT_CODE)
