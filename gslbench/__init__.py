"""gslbench: benchmark the Gradient Snapping Layer against other ways of training for quantization.

`GradientSnappingLayer` and `snap_gradient` (from `gslbench.methods.snapping`) are importable
from here; they load torch on first use only, so the report side stays light.
"""

import os

# OpenMP threads that spin while waiting (the default) slow faiss's small k-means fits several
# times over when the cores are shared (measured: an OPQ run 26 s spinning, 6 s passive, on a
# loaded 2-core machine). Must be set before torch or faiss load the OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["GradientSnappingLayer", "snap_gradient"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from gslbench.methods import snapping

        return getattr(snapping, name)
    raise AttributeError(f"module 'gslbench' has no attribute {name!r}")
