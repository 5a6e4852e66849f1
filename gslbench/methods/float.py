"""`float`: no quantization at all, the ceiling every quantized method is measured against."""

from gslbench.methods.base import Method


class FloatMethod(Method):
    """Similarity loss only, never quantized; one float run serves every code length."""

    name = "float"
    quantized = False
    trains_against_codebooks = False
    summary = "no quantization: the ceiling; one run serves every code length"
