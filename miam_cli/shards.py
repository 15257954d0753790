"""Sharding, one convention for every command that splits its work (prepare, eval-subsets, attribute,
predict, map): `--shard I/N` runs the I-th of N parts (0-based, like `SLURM_ARRAY_TASK_ID` with
`--array=0-(N-1)`), each part writes its own file named `...-III-of-NNN.ext`, and `--merge` joins the
files once every part has written its own.

A shard is a tuple `(i, n)`; `None` (or `(0, 1)`) is the whole work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from miam_cli.errors import UserError

Shard = tuple[int, int]
T = TypeVar("T")


def parse_shard(text: str | None) -> Shard:
    """`I/N` with 0 <= I < N (shards count from 0, like `SLURM_ARRAY_TASK_ID` with `--array=0-(N-1)`)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected I/N with integers, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text!r}: need 0 <= I < N (shards are numbered from 0)")
    return i, n


def shard_from_env(text: str | None, log: Callable[[str], None] = lambda _m: None) -> str | None:
    """`--shard I/N`, or SLURM's array variables when no --shard was given (0-based task ids)."""
    if text is not None:
        return text
    task, count = os.environ.get("SLURM_ARRAY_TASK_ID"), os.environ.get("SLURM_ARRAY_TASK_COUNT")
    if task is not None and count is not None:
        minimum = int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        shard = f"{int(task) - minimum}/{count}"
        log(f"--shard {shard} (from SLURM_ARRAY_TASK_ID/COUNT)")
        return shard
    return None


def requested_shard(text: str | None, merge: bool, log: Callable[[str], None] = lambda _m: None) -> Shard | None:
    """What `--shard I/N` (or the SLURM array) and `--merge` ask of a shardable command: this shard, or None
    (the whole work, or the merge of every shard)."""
    text = None if merge else shard_from_env(text, log)
    return parse_shard(text) if text else None


def is_partial(shard: Shard | None) -> bool:
    """One shard of several: it writes its own file, and `--merge` makes the result."""
    return shard is not None and shard[1] > 1


def owned(count: int, shard: Shard | None) -> list[int]:
    """Units (chunks, tiles, subsets) 0..count-1 dealt round-robin: shard i of n owns u with u % n == i."""
    i, n = shard or (0, 1)
    return [u for u in range(count) if u % n == i]


def owned_items(items: Sequence[T], shard: Shard | None) -> list[T]:
    return [items[u] for u in owned(len(items), shard)]


def contiguous(count: int, shard: Shard | None) -> range:
    """Rows 0..count-1 cut into n contiguous slices of near-equal size (the files then join in order)."""
    i, n = shard or (0, 1)
    return range(count * i // n, count * (i + 1) // n)


def shard_name(stem: str, shard: Shard, suffix: str) -> str:
    """The file of one shard: `STEM-III-of-NNN.SUFFIX`."""
    return f"{stem}-{shard[0]:03d}-of-{shard[1]:03d}{suffix}"


def complete_shard_files(folder: Path, stem: str, suffix: str, command: str) -> list[Path]:
    """Every shard file of `stem` in `folder`, sorted; refused (exit 2) when there is none, when they come
    from different shard counts, or when some shard has not written its file."""
    pattern = f"{stem}-*-of-*{suffix}"
    files = sorted(Path(folder).glob(pattern))
    if not files:
        raise UserError(f"{folder}: no shard files ({pattern}); run {command} --shard I/N first")
    counts = {f.name.rsplit("-of-", 1)[1].split(".")[0] for f in files}
    if len(counts) != 1:
        raise UserError(f"shard files of different shard counts in {folder} ({pattern}): remove the stale ones")
    expected = int(counts.pop())
    if len(files) != expected:
        raise UserError(f"{len(files)} of {expected} shard files present in {folder} ({pattern}); run the missing shards first")
    return files
