"""docs/cli.md is generated from the command tree; this fails when the reference is stale."""

from pathlib import Path

from miam_cli.cli.reference import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_cli_reference_matches_the_code():
    assert DOC.read_text() == render(), "docs/cli.md is stale: run `python -m miam_cli.cli.reference > docs/cli.md`"


def test_every_command_has_an_example():
    text = render()
    sections = text.split("\n## ")[1:]
    missing = [s.splitlines()[0] for s in sections if s.startswith("`miam ") and " " in s.split("`")[1] and "Example:" not in s]
    assert not missing, f"commands without an example in --help: {missing}"
