"""Large blocks go back to the operating system when freed (glibc's malloc), so that a tiled loop's
memory stays flat.

glibc serves a block of at least M_MMAP_THRESHOLD bytes with its own mmap, unmapped on free; smaller
ones come from the heap, which keeps freed space for reuse. The threshold starts at 128 KiB but rises
to the size of every mmapped block freed, up to 32 MiB: after the first map tile, the tile's arrays
and tensors (MiBs each, of sizes that vary with the tile) all land on the heap, and the heap fragments.
Measured on a 160,000-pixel map of 16 tiles (`benchmarks/map_bench.py`'s model and landscape):
resident memory climbed tile by tile (523 to 782 MB in one run) and identical runs peaked anywhere
from 540 to 826 MB; between tiles, everything above ~420 MB was freed memory that `malloc_trim`
handed back (trimming after each tile still left peaks of 576-716 MB). Fixing the threshold (which
also stops it rising) made the peaks flat:

    threshold   peak of 2-4 runs   system time (page faults of fresh blocks)
    dynamic     561-826 MB         3-6 s
    4 MiB       545-565 MB         ~9 s
    1 MiB       502-519 MB         15-18 s

(the map itself took 16-20 s). 4 MiB keeps the peak flat for about a fifth more time; a smaller
threshold buys little memory for much more. Elsewhere than glibc (macOS, musl) this does nothing, nor
where the user chose a threshold with glibc's own `MALLOC_MMAP_THRESHOLD_`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
LARGE_BLOCK = 4 << 20


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
