"""Training methods, one module each, picked by name from `METHODS` (docs/design.md, section 4).

Adding a method is one module with a `Method` subclass (its name, knobs, label and training
behaviour), registered by a line in `BUILTIN_METHODS` or, from another package, by an entry point
of the group `gslbench.methods` (`gslbench.plugins`); its knobs become config fields, CLI options
and grid keys. Importing the registry loads neither torch nor faiss: the methods' modules load
them when a run trains.
"""

from __future__ import annotations

from typing import Any

from gslbench.errors import GslbenchError
from gslbench.methods.base import Method
from gslbench.methods.diveq import DiVeQMethod
from gslbench.methods.float import FloatMethod
from gslbench.methods.gsl import GSLMethod
from gslbench.methods.gumbel import GumbelMethod
from gslbench.methods.pca import PCAMethod
from gslbench.methods.qloss import QLossMethod
from gslbench.methods.rotation import RotationMethod
from gslbench.methods.soft import SoftMethod
from gslbench.methods.ste import STEMethod
from gslbench.methods.ste_sync import SteSyncMethod
from gslbench.methods.two_step import TwoStepMethod
from gslbench.plugins import named_subclass
from gslbench.settings import Setting

BUILTIN_METHODS: dict[str, type[Method]] = {
    method.name: method
    for method in (FloatMethod, TwoStepMethod, QLossMethod, GSLMethod, STEMethod, SoftMethod,
                   GumbelMethod, PCAMethod, RotationMethod, DiVeQMethod, SteSyncMethod)
}


def knob_problem(method: type[Method], taken: set[str]) -> str | None:
    """What is wrong with a method's knobs, or None: each must be a `Setting` named
    `METHOD_...` (the method's name with "_" for "-"; so no two methods' knobs collide) and
    not in `taken`, with a default its own checks accept."""
    prefix = method.name.replace("-", "_") + "_"
    for knob in method.knobs:
        if not isinstance(knob, Setting):
            return f"knob {knob!r} is not a gslbench.settings.Setting"
        if not knob.name.startswith(prefix) or knob.name in taken:
            return f"knob {knob.name!r} must be named {prefix}... and be its own"
        if knob.default is None:
            return f"knob {knob.name!r} has no default"
        try:
            knob.check(knob.default)
        except GslbenchError as exc:
            return f"knob {knob.name!r}: its default is refused: {exc}"
    return None


def plugin_problem(name: str, loaded: Any) -> str | None:
    """What is wrong with `loaded` as the plugin method `name` (None: nothing)."""
    taken = {knob.name for method in BUILTIN_METHODS.values() for knob in method.knobs}
    return named_subclass(name, loaded, Method) or knob_problem(loaded, taken)


# the built-ins, then the plugins (`gslbench.plugins.register_plugins`, run by gslbench.config)
METHODS: dict[str, type[Method]] = dict(BUILTIN_METHODS)

__all__ = ["BUILTIN_METHODS", "METHODS", "Method"]
