"""miam_cli.heap: freed large blocks go back to the OS, so a loop of tiles does not pile up freed heap."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not (hasattr(os, "confstr") and "CS_GNU_LIBC_VERSION" in os.confstr_names
                                     and os.confstr("CS_GNU_LIBC_VERSION")), reason="glibc's malloc only")

# Like a map's tiles: blocks of a few MiB, freed while small objects allocated between them live on
# (they pin the heap, so glibc cannot trim it from the top). Prints the MiB still resident after the free.
CHILD = r"""
import sys
import numpy as np
if sys.argv[1] == "1":
    from miam_cli.heap import return_large_blocks
    assert return_large_blocks()
def anon_mib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
keep = []
np.ones(12 << 20, np.uint8)  # freed at once: glibc's own threshold rises to 12 MiB (unless fixed)
base = anon_mib()
for _tile in range(3):
    blocks = []
    for i in range(30):
        blocks.append(np.ones((5 << 20) + 4096 * i, np.uint8))
        keep.append(bytearray(512))
    del blocks
print(anon_mib() - base)
"""


def _retained_mib(fixed: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    out = subprocess.run([sys.executable, "-c", CHILD, "1" if fixed else "0"], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout)


def test_freed_large_blocks_are_returned_with_the_fixed_threshold_and_retained_without():
    # without: 30 blocks of 5-5.1 MiB (about 150 MiB) stay resident on the heap after they are freed
    assert _retained_mib(fixed=False) > 100
    assert _retained_mib(fixed=True) < 10


def test_a_user_threshold_in_the_environment_is_left_alone(monkeypatch):
    from miam_cli import heap
    heap.return_large_blocks.cache_clear()
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert heap.return_large_blocks() is False
    heap.return_large_blocks.cache_clear()
