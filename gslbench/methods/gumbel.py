"""`gumbel`: as `soft`, with Gumbel-softmax sampling and a hard straight-through sample (Jang et
al. 2017): the forward is one candidate per group, drawn from softmax(-||z - r_j||^2 / τ); the
backward goes through the relaxed weights softmax(-||z - r_j||^2 / τ + g_j), g_j ~ Gumbel(0, 1)."""

from __future__ import annotations

from typing import Any

from gslbench.lazy import lazy_import
from gslbench.methods.soft import SoftMethod, relaxation_knobs, weighted_mean
from gslbench.quantizers import Quantizer

torch = lazy_import("torch")


def gumbel_noise(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """(shape) float32 Gumbel(0, 1) samples, -log(-log U) with U ~ Uniform[tiny, 1), on the CPU."""
    uniform = torch.rand(shape, generator=generator).clamp_(min=torch.finfo(torch.float32).tiny)
    return uniform.log_().neg_().log_().neg_()


class GumbelMethod(SoftMethod):
    """Soft assignment's candidates and logits; the forward is the Gumbel-perturbed argmax
    candidate (exactly a codeword), the gradient that of the relaxed weighted mean. The noise
    comes from a generator seeded with the run's seed, so a run is reproducible."""

    name = "gumbel"
    knobs = relaxation_knobs("gumbel", "Gumbel-softmax", tau=0.044, k=14)
    summary = "similarity loss at a Gumbel-softmax sample of k candidates, hard forward (ST)"

    def __init__(self, config: Any, quantizer: Quantizer | None) -> None:
        super().__init__(config, quantizer)
        self.generator = torch.Generator().manual_seed(config.seed)

    def relax(self, logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(b, G, k) logits and (b, G, k, d/G) candidates -> (b, G, d/G): forward the sampled
        candidate of each group, backward the relaxed weighted mean's gradient."""
        perturbed = logits + gumbel_noise(logits.shape, self.generator).to(logits.device)
        chosen = perturbed.argmax(-1)[..., None, None].expand(*logits.shape[:-1], 1,
                                                               candidates.shape[-1])
        hard = candidates.gather(-2, chosen).squeeze(-2)
        relaxed = weighted_mean(perturbed.softmax(-1), candidates)
        return hard + (relaxed - relaxed.detach())
