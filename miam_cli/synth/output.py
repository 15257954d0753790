"""The output folder of a generator: new or empty, or holding an earlier output of the same generator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from miam_cli.errors import UserError
from miam_cli.files import writable_folder


def claim_output_dir(raw: Path, generator: str, outputs: tuple[str, ...]) -> None:
    """Create `raw`, or clear the `outputs` of an earlier run of `generator` there (recognised by its
    truth.json); a folder holding anything else is refused, so no user file is overwritten."""
    if raw.exists() and not raw.is_dir():
        raise UserError(f"{raw} exists and is not a folder")
    if raw.is_dir() and any(raw.iterdir()):
        try:
            ours = json.loads((raw / "truth.json").read_text()).get("generator") == generator
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise UserError(f"{raw} is not empty and holds no earlier `{generator}` output; choose an empty or new folder")
        for name in outputs:
            p = raw / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    writable_folder(raw, "output folder")  # a file above it, a read-only disk: exit 2 naming it
