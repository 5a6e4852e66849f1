"""`soft`: the similarity loss sees a soft reconstruction, the softmax(-||z - r_j||^2 / τ)-weighted
mean of the quantizer's k candidate reconstructions r_j (per sub-space for PQ/OPQ, as in PQN, Yu et
al. 2018; over a beam of full reconstructions for RQ/LSQ). The database is still encoded with hard
codes."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from gslbench.lazy import lazy_import
from gslbench.methods.base import Method
from gslbench.quantizers.base import Assignment
from gslbench.settings import Setting

torch = lazy_import("torch")


@functools.cache
def _candidate_distances() -> type:
    """The autograd function of `candidate_logits`, defined on first use (so that the registry
    of methods loads without torch): ||z_g - r_{g,j}||^2 forward from the assignment's values
    (not computed again); backward the gradient in z, sum_j grad_j 2 (z_g - r_{g,j})."""

    class CandidateDistances(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, z_snap: torch.Tensor, candidates: torch.Tensor,
                    distances: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(z_snap, candidates)
            return distances.view_as(distances)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple:
            z_snap, candidates = ctx.saved_tensors
            weighted_candidates = torch.einsum("bgk,bgkd->bgd", grad, candidates)
            return 2 * (z_snap * grad.sum(-1, keepdim=True) - weighted_candidates), None, None

    return CandidateDistances


def candidate_logits(z_snap: torch.Tensor, assignment: Assignment, tau: float) -> torch.Tensor:
    """-||z_g - r_{g,j}||^2 / tau for (b, G, d/G) z in the snap space (with grad) and the
    assignment's (b, G, k, d/G) candidates -> (b, G, k) float32, differentiable in z."""
    return _candidate_distances().apply(z_snap, assignment.candidates, assignment.distances) / -tau


def relaxation_knobs(prefix: str, what: str, tau: float, k: int) -> tuple[Setting, Setting]:
    """The knobs (τ, k) of a method that weighs k candidates at temperature τ: `{prefix}_tau` and
    `{prefix}_k`, with defaults `tau` and `k`. τ divides squared distances between unit-norm
    vectors (see README, Methods)."""
    return (
        Setting(f"{prefix}_tau", float, tau, f"Temperature of {what}, on squared distances.",
                low=0.0, low_open=True, symbol="τ", space=("log", 1e-4, 1.0)),
        Setting(f"{prefix}_k", int, k, f"Candidates of {what} per sub-space (PQ/OPQ) or beam width "
                "(RQ/LSQ).", low=1, symbol="k", space=("int", 1, 16)),
    )


def weighted_mean(weights: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """sum_j w_{g,j} r_{g,j}: (b, G, k) weights and (b, G, k, d/G) candidates -> (b, G, d/G)."""
    return (weights.unsqueeze(-1) * candidates).sum(-2)


class SoftMethod(Method):
    """The loss sees a differentiable weighted mean of the candidates; only the weights carry the
    gradient (the candidates are fixed codewords).

    Subclasses change how the weights become what the loss sees (`relax`) and their own knobs,
    `relaxation_knobs` under another prefix.
    """

    name = "soft"
    knobs = relaxation_knobs("soft", "soft assignment", tau=0.021, k=8)
    summary = "similarity loss at the softmax(−||z − r||²/τ)-weighted mean of k candidates (PQN)"

    @classmethod
    def candidates(cls, settings: Mapping[str, Any]) -> tuple[str, int] | None:
        """The `k` knob of `relaxation_knobs`."""
        name = cls.knobs[1].name
        return name, settings[name]

    def representation(self, z: torch.Tensor) -> torch.Tensor:
        """(b, d) -> (b, d): `relax` of the candidates, mapped back from the snap space; z itself
        before the codebooks are fitted (warm-up)."""
        if not self.quantizer.is_fitted:
            return z
        tau, k = (getattr(self.config, knob.name) for knob in self.knobs)
        assignment = self.assignment(z, k)
        logits = candidate_logits(self.quantizer.to_snap_space(z), assignment, tau)
        return self.quantizer.from_snap_space(self.relax(logits, assignment.candidates))

    def relax(self, logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(b, G, k) logits and (b, G, k, d/G) candidates -> (b, G, d/G): the softmax-weighted
        mean of the candidates."""
        return weighted_mean(logits.softmax(-1), candidates)
