"""gslbench: benchmark the Gradient Snapping Layer against quantization-loss training."""

import os

# OpenMP threads that spin while waiting (the default) slow faiss's small k-means fits several
# times over when the cores are shared (measured: an OPQ run 26 s spinning, 6 s passive, on a
# loaded 2-core machine). Must be set before torch or faiss load the OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from gslbench.gsl import GradientSnappingLayer, snap_gradient  # noqa: E402

__all__ = ["GradientSnappingLayer", "snap_gradient"]
