"""`damped`: the similarity loss at a mix of z and its quantization, (1 - γ) z + γ q(z), with the
gradient of the mix; a method written outside gslbench, registered by an entry point."""

from __future__ import annotations

import torch

from gslbench.methods.base import Method
from gslbench.settings import Setting


class DampedMethod(Method):
    """Forward (1 - γ) z + γ q(z) (q(z) without gradient): the loss sees the codes' error damped
    by γ; z itself before the codebooks are fitted."""

    name = "damped"
    knobs = (Setting("damped_gamma", float, 0.5, "Share of q(z) in what the loss sees (damped).",
                     low=0.0, high=1.0, symbol="γ", space=("float", 0.0, 1.0)),)
    summary = "similarity loss at (1 − γ) z + γ q(z)"

    def representation(self, z: torch.Tensor) -> torch.Tensor:
        if not self.quantizer.is_fitted:
            return z
        gamma = self.config.damped_gamma
        return (1 - gamma) * z + gamma * self.assignment(z).reconstruction
