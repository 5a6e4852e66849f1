"""`soft`: the similarity loss sees a soft reconstruction, the softmax(-||z - r_j||^2 / τ)-weighted
mean of the quantizer's k candidate reconstructions r_j (per sub-space for PQ/OPQ, as in PQN, Yu et
al. 2018; over a beam of full reconstructions for RQ/LSQ). The database is still encoded with hard
codes."""

from __future__ import annotations

import torch

from gslbench.methods.base import Method
from gslbench.settings import Setting


def candidate_logits(z_snap: torch.Tensor, candidates: torch.Tensor, tau: float) -> torch.Tensor:
    """-||z_g - r_{g,j}||^2 / tau for (b, G, d/G) z in the snap space (with grad) and
    (b, G, k, d/G) candidates (no grad) -> (b, G, k) float32, differentiable in z."""
    return ((z_snap.unsqueeze(-2) - candidates) ** 2).sum(-1) / -tau


def weighted_mean(weights: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """sum_j w_{g,j} r_{g,j}: (b, G, k) weights and (b, G, k, d/G) candidates -> (b, G, d/G)."""
    return (weights.unsqueeze(-1) * candidates).sum(-2)


class SoftMethod(Method):
    """The loss sees a differentiable weighted mean of the candidates; only the weights carry the
    gradient (the candidates are fixed codewords).

    Subclasses change how the weights become what the loss sees (`relax`) and their own knobs,
    which are always (τ, k) in that order.
    """

    name = "soft"
    knobs = (
        Setting("soft_tau", float, 0.01, "Temperature of soft assignment, on squared distances.",
                low=0.0, low_open=True, symbol="τ", tune=(0.001, 0.01, 0.1)),
        Setting("soft_k", int, 8, "Soft assignment's candidates per sub-space (PQ/OPQ) or beam "
                "width (RQ/LSQ).", low=1, symbol="k", tune=(4, 8, 16)),
    )
    summary = "similarity loss at the softmax(−||z − r||²/τ)-weighted mean of k candidates (PQN)"

    def representation(self, z: torch.Tensor) -> torch.Tensor:
        """(b, d) -> (b, d): `relax` of the candidates, mapped back from the snap space; z itself
        before the codebooks are fitted (warm-up)."""
        if not self.quantizer.is_fitted:
            return z
        tau, k = (getattr(self.config, knob.name) for knob in self.knobs)
        candidates = self.assignment(z, k).candidates
        logits = candidate_logits(self.quantizer.to_snap_space(z), candidates, tau)
        return self.quantizer.from_snap_space(self.relax(logits, candidates))

    def relax(self, logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(b, G, k) logits and (b, G, k, d/G) candidates -> (b, G, d/G): the softmax-weighted
        mean of the candidates."""
        return weighted_mean(logits.softmax(-1), candidates)
