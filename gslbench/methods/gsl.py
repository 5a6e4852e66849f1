"""`gsl`: the similarity loss back-propagated through the Gradient Snapping Layer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gslbench.lazy import lazy_import
from gslbench.methods.base import Method
from gslbench.quantizers import Quantizer
from gslbench.settings import Setting

torch = lazy_import("torch")
snapping = lazy_import("gslbench.methods.snapping")  # the layer, a torch module: loaded to train

# how the layer picks its codeword c* (`gslbench.methods.snapping`, step 2)
SELECT_RULES = ("aligned", "nearest")


class GSLMethod(Method):
    """Identity forward; the gradient is snapped towards a neighbouring codeword (docs/design.md, sec. 5)."""

    name = "gsl"
    knobs = (
        Setting("gsl_alpha", float, 1.0, "GSL snapping strength in [0, 1].", low=0.0, high=1.0,
                symbol="α", space=("float", 0.0, 1.0)),
        Setting("gsl_k", int, 8, "GSL candidates per sub-space (PQ/OPQ) or beam width (RQ/LSQ); "
                "unused by gsl_select nearest.", low=1, symbol="k", space=("int", 1, 16)),
        Setting("gsl_select", str, "aligned", "GSL's codeword: the candidate best aligned with the "
                "gradient (aligned) or the one z is assigned to (nearest).", choices=SELECT_RULES,
                symbol="select", space=("choice", SELECT_RULES)),
    )
    summary = "similarity loss through the Gradient Snapping Layer, alternating with refits"

    @classmethod
    def plain(cls, settings: Mapping[str, Any]) -> bool:
        """At α = 0 nothing snaps: the gradient passes unchanged (`gslbench.methods.snapping`),
        so the run trains float's network and its refits before the last only serve the log."""
        return settings["gsl_alpha"] == 0.0

    @classmethod
    def candidates(cls, settings: Mapping[str, Any]) -> tuple[str, int] | None:
        """`gsl_k`, unless `gsl_select` is nearest (which weighs only the assigned codeword)."""
        return None if settings["gsl_select"] == "nearest" else ("gsl_k", settings["gsl_k"])

    def __init__(self, config: Any, quantizer: Quantizer | None) -> None:
        super().__init__(config, quantizer)
        self.layer = snapping.GradientSnappingLayer(quantizer, k=config.gsl_k,
                                                    alpha=config.gsl_alpha, select=config.gsl_select)

    def representation(self, z: torch.Tensor) -> torch.Tensor:
        return self.layer(z)
