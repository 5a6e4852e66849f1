"""`coarse-pq`: product quantization with 5 k-means iterations (gslbench's PQ runs 25)."""

from gslbench.quantizers.pq import PQ


class CoarsePQ(PQ):
    """PQ whose codebooks are fitted with 5 k-means iterations."""

    name = "coarse-pq"
    OPTIONS = {"kmeans_iters": 5}
