"""`qloss`: similarity loss + lambda * mean ||z - q(z)||^2 (the DQN family)."""

from __future__ import annotations

from typing import ClassVar

from gslbench.lazy import lazy_import
from gslbench.methods.base import Method
from gslbench.settings import Setting

torch = lazy_import("torch")


class QLossMethod(Method):
    """A quantization-loss penalty against the codebooks in use, refitted between epochs.

    `weight_knob` names the knob that weighs the penalty (`ste` reuses it as its commitment).
    """

    name = "qloss"
    knobs = (Setting("qloss_lambda", float, 2.7, "Weight of the quantization loss (qloss).",
                     low=0.0, symbol="λ", space=("log", 1e-3, 10.0)),)
    summary = "similarity loss + λ · mean ||z − q(z)||², alternating with codebook refits (DQN)"
    weight_knob: ClassVar[str] = "qloss_lambda"

    def penalty(self, z: torch.Tensor) -> torch.Tensor:
        """weight * mean over the batch of ||z - q(z)||^2, q(z) without grad, so its gradient at z
        is 2 weight (z - q(z)) / b; 0 before the codebooks are fitted or at weight 0."""
        weight = getattr(self.config, self.weight_knob)
        if not self.quantizer.is_fitted or weight == 0:
            return z.new_zeros(())
        return weight * ((z - self.assignment(z).reconstruction) ** 2).sum(1).mean()
