"""A gslbench plugin: the `damped` training method and the `coarse-pq` quantizer."""
