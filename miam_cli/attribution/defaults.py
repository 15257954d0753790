"""Defaults of `miam attribute` that the command line shows in its help: kept free of imports, so
that `miam --help` does not load torch to print them.

Sampling stops once the largest standard error is at most ``TOLERANCE`` in the target's units (AUC,
top-1, minus the loss, a probability), or when ``BUDGET`` coalition evaluations are spent. On the demo
run a Landsat year moves AUC by ~1e-3 beside the other modalities, and the kernel sampler meets 0.001
after its first few dozen pairs; docs/performance.md has the times.
"""

TOLERANCE = 0.001
BUDGET = 2000
