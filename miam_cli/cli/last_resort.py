"""The last line of defence for errors nobody anticipated: one line for the user, the traceback in a file.

User errors (`UserError`, exit 2) and known runtime failures (`RuntimeFailure`, exit 1) are reported
by `main` as they are. Anything else is a bug in miam or a system failure (a full disk, a file that
vanished): the user sees one line naming the command and the exception, exit 1, and the full
traceback goes to a log file whose path is printed, so a real bug stays reportable without showing
a wall of Python. `MIAM_DEBUG=1` prints the traceback instead. The log folder is `$MIAM_LOG_DIR`, else
`$XDG_CACHE_HOME/miam/logs` (`~/.cache/miam/logs`), else the temporary folder when those are not writable.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from miam_cli.errors import describe_os_error



def click_module():
    """The click that typer runs on: recent typers vendor it as `typer._click`, older ones import click."""
    try:
        from typer import _click
    except ImportError:
        import click as _click
    return _click


def command_name(group, argv: list[str]) -> str:
    """`miam prepare geoplant` for argv `prepare geoplant raw store`: the command path, found in the click tree."""
    words, cmd = ["miam"], group
    for token in argv:
        sub = getattr(cmd, "commands", {})  # a group's subcommands (a plain command has none)
        if token not in sub:
            break
        words.append(token)
        cmd = sub[token]
    return " ".join(words)


def log_dir() -> Path:
    if os.environ.get("MIAM_LOG_DIR"):
        return Path(os.environ["MIAM_LOG_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "miam" / "logs"


def write_log(command: str, argv: list[str], exc: BaseException) -> Path | None:
    """The traceback, the command line and the versions in a new log file; None when nothing is writable."""
    from miam_cli import __version__

    text = (f"command: {command}\nargv: {argv!r}\nmiam {__version__}, python {sys.version.split()[0]}\n"
            f"time: {time.strftime('%Y-%m-%dT%H:%M:%S')}\n\n" + "".join(traceback.format_exception(exc)))
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (log_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text)
            return path
        except OSError:
            continue
    return None


def report_unexpected(command: str, argv: list[str], exc: BaseException, err) -> None:
    """One line on stderr (`err`, a rich Console), the traceback in a log file (or on stderr with MIAM_DEBUG=1)."""
    from rich.markup import escape

    if os.environ.get("MIAM_DEBUG", "") not in ("", "0"):
        err.print("".join(traceback.format_exception(exc)), markup=False, highlight=False, end="")
        err.print(f"[red]failed:[/] {escape(command)}: unexpected {type(exc).__name__} (traceback above, MIAM_DEBUG=1)", highlight=False)
        return
    if isinstance(exc, OSError):
        summary = describe_os_error(exc)
    else:
        first = (str(exc).splitlines() or [""])[0][:200]
        summary = f"unexpected {type(exc).__name__}" + (f": {first}" if first else "")
    path = write_log(command, argv, exc)
    where = f"traceback in {path}" if path else "traceback not written (no writable log folder)"
    err.print(f"[red]failed:[/] {escape(command)}: {escape(summary)} ({escape(where)}; MIAM_DEBUG=1 prints it)", highlight=False)
