"""The output folder of a generator: new or empty, or holding an earlier output of the same generator.

While a generator writes, the folder holds a marker (`files.UNFINISHED`, naming the generator), removed
once truth.json is written: a folder with the marker is an interrupted output, which `prepare` refuses
and the same generator replaces when run again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from miam_cli.errors import UserError
from miam_cli.files import UNFINISHED, unfinished_generator, writable_folder


def claim_output_dir(raw: Path, generator: str, outputs: tuple[str, ...]) -> None:
    """Create `raw`, or clear the `outputs` of an earlier run of `generator` there (recognised by its
    truth.json, or by the marker of an interrupted one); a folder holding anything else is refused, so
    no user file is overwritten. Marks `raw` unfinished until `finish_output_dir`."""
    raw = Path(raw)
    if raw.exists() and not raw.is_dir():
        raise UserError(f"{raw} exists and is not a folder")
    if raw.is_dir() and any(raw.iterdir()):
        if _generator_of(raw) != generator:
            raise UserError(f"{raw} is not empty and holds no earlier `{generator}` output (no truth.json from it); "
                            "choose an empty or new folder")
        for name in outputs:
            p = raw / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    writable_folder(raw, "output folder")  # a file above it, a read-only disk: exit 2 naming it
    (raw / UNFINISHED).write_text(generator + "\n", encoding="utf-8")


def finish_output_dir(raw: Path) -> None:
    """The output is complete (truth.json written last): remove the unfinished marker."""
    (Path(raw) / UNFINISHED).unlink(missing_ok=True)


def _generator_of(raw: Path) -> str | None:
    """The generator of an earlier output in `raw`: its truth.json's, else the unfinished marker's."""
    try:
        return json.loads((raw / "truth.json").read_text()).get("generator")
    except (OSError, ValueError, AttributeError):
        return unfinished_generator(raw)
