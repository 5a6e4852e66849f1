"""gslbench: benchmark the Gradient Snapping Layer against quantization-loss training."""

from gslbench.gsl import GradientSnappingLayer, snap_gradient

__all__ = ["GradientSnappingLayer", "snap_gradient"]
