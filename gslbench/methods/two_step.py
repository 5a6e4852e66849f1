"""`two-step`: train with the similarity loss only, then fit the quantizer once."""

from gslbench.methods.base import Method


class TwoStepMethod(Method):
    """Similarity loss only; the codebooks are fitted after training and never used by it."""

    name = "two-step"
    trains_against_codebooks = False
    summary = "similarity loss only, then the quantizer is fitted once"
