"""Defaults of `miam attribute` that the command line shows in its help: kept free of imports, so
that `miam --help` does not load torch to print them.

Sampling stops once the largest standard error is at most ``TOLERANCE``: 0.001 in the target's units
(AUC, top-1, minus the loss, a probability) or 2% of |v(all) - v(none)|, whichever is larger; or when
``BUDGET`` coalition evaluations are spent. On the demo run a Landsat year moves AUC by ~1e-3 beside
the other modalities, and the kernel sampler meets 0.001 after its first few dozen pairs; Sentinel-2's
16 patches on their own share 0.11 AUC, and 2% of it (0.0023) takes 340 evaluations where 0.001 took
1,494 (the ranking of the patches is the same); docs/performance.md has the times.
"""

TOLERANCE = "0.001,2%"
BUDGET = 2000
