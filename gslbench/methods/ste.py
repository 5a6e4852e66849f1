"""`ste`: the similarity loss sees the hard reconstruction q(z), its gradient passes straight
through to z (Bengio et al. 2013), plus an optional commitment β · ||z - sg(q(z))||^2 (van den Oord
et al. 2017)."""

from __future__ import annotations

import torch

from gslbench.methods.base import Method, squared_error
from gslbench.settings import Setting


class STEMethod(Method):
    """Forward q(z), backward the identity; commitment against the codebooks in use."""

    name = "ste"
    knobs = (Setting("ste_beta", float, 0.25, "Weight of STE's commitment term (0: none).",
                     low=0.0, symbol="β", tune=(0.0, 0.1, 0.25, 1.0)),)
    summary = "similarity loss at q(z), gradient straight through to z, + β · commitment"

    def representation(self, z: torch.Tensor) -> torch.Tensor:
        """(b, d) -> (b, d): exactly q(z) forward, the gradient at q(z) copied to z backward;
        z itself before the codebooks are fitted (warm-up)."""
        if not self.quantizer.is_fitted:
            return z
        return self.assignment(z).reconstruction + (z - z.detach())

    def penalty(self, z: torch.Tensor) -> torch.Tensor:
        """β * mean over the batch of ||z - sg(q(z))||^2; 0 before the codebooks are fitted."""
        if not self.quantizer.is_fitted or self.config.ste_beta == 0:
            return z.new_zeros(())
        return self.config.ste_beta * squared_error(z, self.assignment(z).reconstruction)
