"""The prepare driver shared by every dataset adapter.

An adapter builds a `StorePlan` (samples, classes, modality specs) and a picklable
`decode(rows) -> ChunkData` callable; this module runs the chunks (in worker processes when asked),
resumes where a previous run stopped, writes only this shard's chunks, and finalises the store when
every chunk is done. Worker processes end with their parent, even when it is killed with SIGKILL.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from miam_cli import threads
from miam_cli.errors import RuntimeFailure, UserError, describe_os_error
from miam_cli.store.schema import StoreMeta
from miam_cli.store.writer import ChunkData, StorePlan, StoreWriter

MAX_CHUNK_BYTES = 2 << 30  # one decoded chunk in memory (per worker): beyond this, --chunk-size is refused


class ChunkDecoder(Protocol):
    def __call__(self, rows: range) -> ChunkData: ...


@dataclass
class PrepareResult:
    store: Path
    meta: StoreMeta | None  # None when other shards still have chunks to write
    chunks_written: int
    chunks_pending_elsewhere: int
    faults: int


def run_prepare(
    plan: StorePlan,
    decode: ChunkDecoder,
    store: Path,
    *,
    workers: int = 0,
    shard: tuple[int, int] = (0, 1),
    strict: bool = False,
    overwrite: bool = False,
    chunk_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareResult:
    writer = StoreWriter(store, plan, chunk_size=effective_chunk_size(plan, chunk_size))
    try:
        return _prepare(writer, decode, workers, shard, strict, overwrite, progress)
    except OSError as e:  # a full disk, a folder made read-only: every chunk with its marker is kept
        raise RuntimeFailure(f"{describe_os_error(e)}; prepare stopped. The chunks written so far are kept: fix the cause "
                             "and run the same command again to resume") from None


def _prepare(writer: StoreWriter, decode: ChunkDecoder, workers: int, shard: tuple[int, int], strict: bool, overwrite: bool,
             progress) -> PrepareResult:
    store = writer.path
    writer.begin(overwrite=overwrite)
    with writer.shard_lock(shard):
        todo = writer.pending_chunks(shard)
        refused: list[dict] = []
        for done, (chunk, raw) in enumerate(_decoded(decode, writer, todo, workers), start=1):
            data = writer.sanitize(chunk, raw)
            if strict and data.faults:
                refused += data.faults  # every chunk is still decoded: --strict lists every fault at once
            else:
                writer.write_chunk(chunk, data)
            if progress:
                progress(done, len(todo))
        if refused:
            raise UserError(_strict_message(refused))
        if not writer.all_done():
            remaining = len(writer.pending_chunks((0, 1)))
            return PrepareResult(Path(store), None, len(todo), remaining, writer.faults_so_far())
        faults = writer.faults_so_far()  # this run's and those of the runs it resumed
        meta = writer.finalize()
    return PrepareResult(Path(store), meta, len(todo), 0, faults)


def effective_chunk_size(plan: StorePlan, chunk_size: int) -> int:
    """At most the number of samples (a bigger chunk only costs memory); refused when one chunk would
    not fit in memory (`--chunk-size 99999999` once exhausted 24 GB)."""
    if chunk_size < 1:
        raise UserError(f"--chunk-size {chunk_size}: must be at least 1")
    size = min(chunk_size, max(1, len(plan.samples)))
    per_sample = sum(s.tokens * (s.features * 4 + 1) for s in plan.modalities.values())
    if size * per_sample > MAX_CHUNK_BYTES:
        most = max(1, MAX_CHUNK_BYTES // max(per_sample, 1))
        raise UserError(f"--chunk-size {chunk_size}: one chunk would take {size * per_sample / 2**30:.1f} GiB of memory "
                        f"per process; use at most {most}")
    return size


def _decoded(decode: ChunkDecoder, writer: StoreWriter, chunks: list[int], workers: int):
    """Yield (chunk, ChunkData) in chunk order; decoding runs in `workers` processes if > 0.

    Workers are spawned, not forked: a fork after torch/zarr started threads can deadlock. Each
    starts with its share of the thread budget (miam_cli.threads), so W workers never use more
    threads in all than the budget allows.
    """
    if workers <= 0 or len(chunks) <= 1:
        for c in chunks:
            yield c, decode(writer.chunk_rows(c))
        return
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(os.getpid(), threads.worker_threads(workers))) as pool:
        # a bounded window of chunks in flight keeps memory flat for any number of surveys
        window = 2 * workers
        futures = {}
        for i, c in enumerate(chunks):
            futures[c] = pool.submit(decode, writer.chunk_rows(c))
            if i >= window - 1:
                first = next(iter(futures))
                yield first, futures.pop(first).result()
        for c, fut in futures.items():
            yield c, fut.result()


def _init_worker(parent: int, worker_threads: int) -> None:
    """Worker initializer: dies with its parent, and starts numpy/torch with its share of the threads."""
    die_with_parent(parent)
    threads.init_worker(worker_threads)


def die_with_parent(parent: int) -> None:
    """Worker initializer: the worker ends when its parent does, even by SIGKILL (when no cleanup runs).

    Linux delivers SIGKILL on the parent's death (PR_SET_PDEATHSIG); elsewhere, and as a backstop, a
    daemon thread checks every second that the parent is still the one that started the worker."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError, TypeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="miam-parent-watch").start()


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _strict_message(faults: list[dict]) -> str:
    counts: dict[str, int] = {}
    for f in faults:
        counts[f["kind"]] = counts.get(f["kind"], 0) + 1
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
    lines = [f"--strict: {len(faults)} fault(s) in the raw data ({kinds}); without --strict they are marked missing and counted:"]
    for f in faults:
        lines.append(f"  {f['kind']}: {f.get('file') or ''} sample {f.get('sample')} ({f.get('modality')}): {f.get('detail', '')}")
    return "\n".join(lines)
