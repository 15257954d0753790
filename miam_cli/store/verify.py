"""`miam store verify`: every check there is on a token store, every chunk read back (see `integrity`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from miam_cli.errors import UserError
from miam_cli.store.integrity import ARRAYS, CHECKSUMMED_SINCE, chunk_files, file_digest, read_failure, structure_problems
from miam_cli.store.reader import TokenStore


@dataclass
class VerifyReport:
    store: Path
    version: int
    checksummed: bool
    chunks: int = 0
    files: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(path: Path, progress=None) -> VerifyReport:
    """Every check there is: structure, table digests, and every chunk read back (checksums checked).

    Problems are collected, not raised, so that the report lists them all; the CLI exits 2 on any."""
    store = TokenStore(path)
    report = VerifyReport(Path(path), store.meta.version, store.meta.version >= CHECKSUMMED_SINCE)
    try:
        report.problems += structure_problems(store)
    except UserError as e:  # a table that cannot be read at all
        report.problems.append(str(e))
        return report
    for name, digest in store.meta.files.items():
        f = Path(path) / name
        report.files += 1
        if not f.is_file():
            report.problems.append(f"{f}: missing")
        elif file_digest(f) != digest:
            report.problems.append(f"{f}: content differs from the digest in store.json (damaged or replaced)")
    _read_every_chunk(store, report, progress)
    return report


def _read_every_chunk(store, report: VerifyReport, progress=None) -> None:
    import zarr

    zdir = store.path / "tokens.zarr"
    try:
        root = zarr.open_group(zdir, mode="r")
    except Exception:
        return  # already reported by the structure check
    total = sum(root[f"{m}/{k}"].cdata_shape[0] for m in store.meta.modalities for k in ARRAYS if f"{m}/{k}" in root)
    for m in store.meta.modalities:
        for key in ARRAYS:
            if f"{m}/{key}" not in root:
                continue
            array = root[f"{m}/{key}"]
            for i, f in enumerate(chunk_files(array, zdir / m / key)):
                report.chunks += 1
                problem = _chunk_problem(array, i, f, key, report.checksummed)
                if problem:
                    report.problems.append(problem)
                if progress:
                    progress(report.chunks, total)


def _chunk_problem(array, i: int, f: Path, key: str, checksummed: bool) -> str | None:
    if checksummed and not f.is_file():
        return None  # reported by the structure check
    try:
        block = np.asarray(array.get_block_selection((i,)))
    except Exception as e:
        return f"{f}: unreadable chunk ({read_failure(e)})"
    if key == "values" and not np.isfinite(block).all():
        return f"{f}: non-finite values (miam writes missing tokens as 0, so this chunk is damaged)"
    return None
