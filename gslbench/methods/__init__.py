"""Training methods, one module each, picked by name from `METHODS` (docs/design.md, section 4).

Adding a method is one new module with a `Method` subclass (its name, knobs, label and training
behaviour) and one line in `METHODS`; its knobs become config fields, CLI options and grid keys.
"""

from gslbench.methods.base import Method
from gslbench.methods.float import FloatMethod
from gslbench.methods.gsl import GSLMethod
from gslbench.methods.gumbel import GumbelMethod
from gslbench.methods.qloss import QLossMethod
from gslbench.methods.soft import SoftMethod
from gslbench.methods.ste import STEMethod
from gslbench.methods.two_step import TwoStepMethod

METHODS: dict[str, type[Method]] = {
    method.name: method
    for method in (FloatMethod, TwoStepMethod, QLossMethod, GSLMethod, STEMethod, SoftMethod,
                   GumbelMethod)
}

__all__ = ["METHODS", "Method"]
