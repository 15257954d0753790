"""The prepare driver shared by every dataset adapter.

An adapter builds a `StorePlan` (samples, classes, modality specs) and a picklable
`decode(rows) -> ChunkData` callable; this module runs the chunks (in worker processes when asked),
resumes where a previous run stopped, writes only this shard's chunks, and finalises the store when
every chunk is done.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from miam_cli import threads
from miam_cli.errors import UserError
from miam_cli.store.schema import StoreMeta
from miam_cli.store.writer import ChunkData, StorePlan, StoreWriter


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
    writer = StoreWriter(store, plan, chunk_size=chunk_size)
    writer.begin(overwrite=overwrite)
    todo = writer.pending_chunks(shard)
    faults = 0
    for done, (chunk, raw) in enumerate(_decoded(decode, writer, todo, workers), start=1):
        data = writer.sanitize(chunk, raw)
        if strict and data.faults:
            raise UserError(_strict_message(data.faults))
        writer.write_chunk(chunk, data)
        faults += len(data.faults)
        if progress:
            progress(done, len(todo))
    if not writer.all_done():
        remaining = len(writer.pending_chunks((0, 1)))
        return PrepareResult(Path(store), None, len(todo), remaining, faults)
    meta = writer.finalize()
    return PrepareResult(Path(store), meta, len(todo), 0, faults)


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
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=threads.init_worker,
                             initargs=(threads.worker_threads(workers),)) as pool:
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


def _strict_message(faults: list[dict]) -> str:
    lines = [f"--strict: {len(faults)} fault(s) in the raw data (without --strict they are marked missing and counted):"]
    for f in faults[:20]:
        lines.append(f"  {f['kind']}: {f.get('file') or ''} sample {f.get('sample')} ({f.get('modality')}): {f.get('detail', '')}")
    if len(faults) > 20:
        lines.append(f"  ... and {len(faults) - 20} more")
    return "\n".join(lines)
