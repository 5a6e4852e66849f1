"""Training methods, one module each, picked by name from `METHODS` (DESIGN.md section 4).

Adding a method is one new module with a `Method` subclass (its name, knobs, label and training
behaviour) and one line in `METHODS`; its knobs become config fields, CLI options and grid keys.
"""

from gslbench.methods.base import Method
from gslbench.methods.float import FloatMethod
from gslbench.methods.gsl import GSLMethod
from gslbench.methods.qloss import QLossMethod
from gslbench.methods.two_step import TwoStepMethod

METHODS: dict[str, type[Method]] = {
    method.name: method for method in (FloatMethod, TwoStepMethod, QLossMethod, GSLMethod)
}

__all__ = ["METHODS", "Method"]
