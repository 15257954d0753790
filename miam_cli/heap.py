"""Large blocks go back to the operating system when freed (glibc's malloc), so that a tiled loop's
memory stays flat.

glibc serves a block of at least M_MMAP_THRESHOLD bytes with its own mmap, unmapped on free; smaller
ones come from the heap, which keeps freed space for reuse. The threshold starts at 128 KiB but rises
to the size of every mmapped block freed, up to 32 MiB: after the first map tile, the tile's arrays
and tensors (MiBs each, of sizes that vary with the tile) all land on the heap, and the heap fragments.
Measured on a 160,000-pixel map of 16 tiles (`benchmarks/map_bench.py`'s smaller model): resident
memory climbed from 523 to 782 MB, tile by tile, and identical runs peaked anywhere from 540 to 812
MB; everything above ~420 MB between tiles was freed memory that `malloc_trim` handed back. With the
threshold fixed at 1 MiB (fixing it also stops the rise), the same map peaked at 502-516 MB.

A fixed threshold costs one mmap and fresh zeroed pages per large block; a tile allocates few of
them beside the model's arithmetic. Elsewhere than glibc (macOS, musl) this does nothing, nor where the
user chose a threshold with glibc's own `MALLOC_MMAP_THRESHOLD_`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
LARGE_BLOCK = 1 << 20


@functools.cache
def return_large_blocks(threshold: int = LARGE_BLOCK) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes for this process (once); False where not glibc."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    if not hasattr(os, "confstr") or "CS_GNU_LIBC_VERSION" not in os.confstr_names:
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError, ValueError):
        return False
