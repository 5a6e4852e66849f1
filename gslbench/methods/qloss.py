"""`qloss`: similarity loss + lambda * mean ||z - q(z)||^2 (the DQN family)."""

from __future__ import annotations

import torch

from gslbench.methods.base import Method, squared_error
from gslbench.settings import Setting


class QLossMethod(Method):
    """A quantization-loss penalty against the codebooks in use, refitted between epochs."""

    name = "qloss"
    knobs = (Setting("qloss_lambda", float, 0.1, "Weight of the quantization loss (qloss).",
                     low=0.0, symbol="λ", tune=(0.01, 0.1, 1.0, 10.0)),)
    summary = "similarity loss + λ · mean ||z − q(z)||², alternating with codebook refits (DQN)"

    def penalty(self, z: torch.Tensor) -> torch.Tensor:
        """lambda * mean over the batch of ||z - q(z)||^2; 0 before the codebooks are fitted."""
        if not self.quantizer.is_fitted:
            return z.new_zeros(())
        return self.config.qloss_lambda * squared_error(z, self.assignment(z).reconstruction)
