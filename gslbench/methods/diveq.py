"""`diveq`: DiVeQ, differentiable vector quantization by directional reparameterisation (Vali &
Bäckström, "DiVeQ: Differentiable Vector Quantization Using the Reparameterization Trick", ICLR
2026; the authors' package `diveq`), implemented here from the paper (the package is not a
dependency: it learns its own codebook by gradient, which gslbench does not).

Training output, for the representation z (b, d), its reconstruction c = q(z) and noise
ε ~ N(0, I):

    z + ‖c − z‖ · sg[(c − z + σε) / ‖c − z + σε‖]

a point at the quantization error's distance from z, along the direction to c blurred by σε
(σ the noise's standard deviation, the authors' `noise_var`, default 1e-3, advised below 1e-2).
Its gradient in z is g − (g · d) u, with d the stopped direction and u = (c − z) / ‖c − z‖: the
gradient flows through the error's length. Evaluation output (no gradient asked): c itself, as
the database is encoded.

Where it applies: on the whole vector and its full reconstruction for every quantizer, as the
authors' product and residual variants do (the PQ sub-codewords concatenated, OPQ's
reconstruction rotated back, RQ's and LSQ's sum of stage codewords).

Kept from the paper: the training and evaluation outputs and the absence of any auxiliary loss.
Not kept: the codebook's gradient through ‖c − z‖ and the replacement of unused codewords; in
gslbench the quantizer refits its codebooks (faiss k-means, which reseeds empty clusters) between
epochs. The noise comes from a generator seeded with the run's seed, drawn only after the first
codebook fit, so a run is reproducible and its warm-up is float's.
"""

from __future__ import annotations

from typing import Any

from gslbench.lazy import lazy_import
from gslbench.methods.base import Method
from gslbench.quantizers import Quantizer
from gslbench.settings import Setting

torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")

_TINY = 1e-12  # the authors' clamp of the blurred direction's norm


def diveq(z: torch.Tensor, c: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """(b, d) z (with grad), its (b, d) codewords c (no grad) and (b, d) noise σε ->
    (b, d) z + ‖c − z‖ · sg[(c − z + σε) / ‖c − z + σε‖]."""
    error = c.detach() - z
    direction = F.normalize(error.detach() + noise, dim=-1, eps=_TINY)
    return z + torch.linalg.vector_norm(error, dim=-1, keepdim=True) * direction


class DiVeQMethod(Method):
    """The loss sees DiVeQ's reparameterised reconstruction in training, the codeword otherwise;
    no penalty."""

    name = "diveq"
    knobs = (Setting("diveq_sigma", float, 1e-3, "Standard deviation of DiVeQ's directional "
                     "noise.", low=0.0, symbol="σ", space=("log", 1e-4, 1e-2)),)
    summary = "similarity loss at z + ‖q(z) − z‖ · sg[direction to q(z), blurred] (DiVeQ)"

    def __init__(self, config: Any, quantizer: Quantizer | None) -> None:
        super().__init__(config, quantizer)
        self.generator = torch.Generator().manual_seed(config.seed)

    def representation(self, z: torch.Tensor) -> torch.Tensor:
        """(b, d) -> (b, d): DiVeQ's output while training (z asks for a gradient), q(z) when
        not; z itself before the codebooks are fitted (warm-up)."""
        if not self.quantizer.is_fitted:
            return z
        reconstruction = self.assignment(z).reconstruction
        if not z.requires_grad:
            return reconstruction
        noise = torch.randn(z.shape, generator=self.generator).to(z.device)
        return diveq(z, reconstruction, self.config.diveq_sigma * noise)
