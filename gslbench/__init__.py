"""gslbench: benchmark the Gradient Snapping Layer against quantization-loss training."""
