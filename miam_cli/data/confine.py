"""Reads confined to the data's own folder.

Running someone else's dataset spec or metadata must not copy your readable files into their store:
a `surveyId` of `/home/you/x`, a spec `pattern: /home/you/{id}` or a symlink planted in their folder
would otherwise read your files. Every path an adapter opens is resolved (symlinks included) and must
lie inside the root: the raw-data folder, or the folder of the dataset spec (its `root` when given).
Data that really lives elsewhere is read when the user says so (`allow_outside_root: true` in a dataset or map spec,
`--allow-outside-root` for the raw-data adapters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# an id that names a sample's file: a plain name, never a path (no separators, no leading dot)
SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Confinement:
    root: Path  # resolved
    allow_outside: bool = False

    @classmethod
    def at(cls, root: Path | str, allow_outside: bool = False) -> "Confinement":
        return cls(Path(root).resolve(), allow_outside)

    def inside(self, path: Path | str) -> bool:
        if self.allow_outside:
            return True
        resolved = Path(path).resolve()
        return resolved == self.root or self.root in resolved.parents

    def why_not(self, path: Path | str) -> str | None:
        """None when `path` may be read; otherwise the reason, naming the root and the opt-in."""
        if self.inside(path):
            return None
        return (f"{path} lies outside {self.root} (symlinks resolved); miam reads only inside the data's folder "
                f"unless allowed ({OPT_IN})")


OPT_IN = "allow_outside_root: true in a dataset or map spec, --allow-outside-root for prepare geoplant/taxabench"
