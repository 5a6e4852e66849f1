"""The plugin's own tests: gslbench's test kit on its method and quantizer (run by
tests/test_plugins.py with the package installed, as its author runs them)."""

from gslbench_demo_plugin.coarse import CoarsePQ
from gslbench_demo_plugin.damped import DampedMethod

from gslbench.quantizers import QUANTIZERS
from gslbench.testing import check_method


def test_damped_passes_the_checks_of_every_method():
    check_method(DampedMethod)
    check_method(DampedMethod, damped_gamma=0.75)


def test_coarse_pq_is_registered():
    assert QUANTIZERS["coarse-pq"] is CoarsePQ
