"""Renders docs/cli.md from the command tree itself, so the reference cannot drift from the code.

    python -m miam_cli.cli.reference > docs/cli.md      (tests/test_cli_reference.py checks it)
"""

from __future__ import annotations

import typer

HEADER = """# `miam` command reference

Generated from the code by `python -m miam_cli.cli.reference > docs/cli.md`; a test fails when it is stale.
Results go to stdout (a table, or one JSON document with `--json`); logs and progress to stderr.
Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input, 75 training preempted (resume with `--resume`), 130 interrupted with Ctrl-C.
"""


def _walk(cmd, path: list[str]):
    if hasattr(cmd, "commands"):  # a group (typer vendors its own click: duck-type, don't isinstance)
        for name in sorted(cmd.commands):
            yield from _walk(cmd.commands[name], path + [name])
    else:
        yield path, cmd


def render() -> str:
    from miam_cli.cli.main import app

    root = typer.main.get_command(app)
    parts = [HEADER]
    for path, cmd in _walk(root, ["miam"]):
        ctx = typer.Context(cmd, info_name=" ".join(path))
        parts.append(f"## `{' '.join(path)}`\n")
        parts.append("```\n" + " ".join(cmd.collect_usage_pieces(ctx)).join([f"{' '.join(path)} ", ""]) + "\n```\n")
        parts.append((cmd.help or "").strip() + "\n")
        rows = []
        for p in cmd.params:
            if p.param_type_name == "argument":
                rows.append((p.name.upper(), getattr(p, "help", "") or ""))
            elif p.param_type_name == "option" and "--help" not in p.opts:
                rows.append((", ".join(p.opts + p.secondary_opts), (p.help or "") + _default(p)))
        if rows:
            parts.append("| argument / option | meaning |\n| --- | --- |")
            parts.extend(f"| `{name}` | {_cell(text)} |" for name, text in rows)
            parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(p) -> str:
    if p.is_flag or p.default in (None, (), []):
        return ""
    return f" [default: {p.default}]"


if __name__ == "__main__":
    print(render(), end="")
