"""`ste`: the similarity loss sees the hard reconstruction q(z), its gradient passes straight
through to z (Bengio et al. 2013), plus an optional commitment β · ||z - sg(q(z))||^2 (van den Oord
et al. 2017): qloss's penalty, under its own knob."""

from __future__ import annotations

from gslbench.lazy import lazy_import
from gslbench.methods.qloss import QLossMethod
from gslbench.settings import Setting

torch = lazy_import("torch")


class STEMethod(QLossMethod):
    """Forward q(z), backward the identity; the commitment is qloss's penalty weighted by β."""

    name = "ste"
    knobs = (Setting("ste_beta", float, 3.1, "Weight of STE's commitment term (0: none).",
                     low=0.0, symbol="β", space=("log", 1e-3, 10.0)),)
    summary = "similarity loss at q(z), gradient straight through to z, + β · commitment"
    weight_knob = "ste_beta"

    def representation(self, z: torch.Tensor) -> torch.Tensor:
        """(b, d) -> (b, d): exactly q(z) forward, the gradient at q(z) copied to z backward;
        z itself before the codebooks are fitted (warm-up)."""
        if not self.quantizer.is_fitted:
            return z
        return self.assignment(z).reconstruction + (z - z.detach())
