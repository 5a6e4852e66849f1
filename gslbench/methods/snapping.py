"""The Gradient Snapping Layer (GSL; Liu & Lu 2016), as stated in the design page, docs/design.md, section 5.

Forward is the identity on the representation z, so the similarity loss sees the float vector.
Backward bends the similarity loss's gradient g at z towards a neighbouring codeword:

1. for each candidate codeword c near z, v_c = z - c (a step along -g moves z towards c exactly
   when g . v_c > 0);
2. c* = the candidate whose v_c has the largest cosine with g (`select="aligned"`, the default), or
   the codeword z is assigned to, the nearest candidate (`select="nearest"`): the paper's
   available text only says "a neighbouring codeword", so both readings are offered;
3. if g . v_c* <= 0 (no candidate lies ahead), g passes unchanged;
4. otherwise g_s = ((g . v_c*) / ||v_c*||^2) v_c*, the component of g along v_c*: still a descent
   direction (g_s . g >= 0), pointed at a codeword;
5. the output is (1 - alpha) g + alpha g_s.

For PQ / OPQ the snapping runs independently in each sub-space (a PQ codeword is a concatenation of
sub-codewords; OPQ first rotates, and the rotation is orthogonal, so gradients rotate the same way);
for RQ / LSQ the candidates are a beam of full reconstructions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gslbench.errors import GslbenchError
from gslbench.methods.gsl import SELECT_RULES  # how c* is chosen (step 2)

_TINY_LENGTH = 1e-6  # |v_c| at or below this: c is on z


def snap_gradient(
    z: torch.Tensor, g: torch.Tensor, candidates: torch.Tensor, alpha: float = 1.0,
    select: str = "aligned",
) -> torch.Tensor:
    """Snap the gradients `g` at `z` towards a candidate codeword (steps 1 to 5).

    z, g: (..., d) float; candidates: (..., k, d) with the same leading dimensions (a batch, or a
    batch and sub-spaces), nearest first. select: "aligned" (c* = the candidate best aligned with
    g) or "nearest" (c* = the first candidate, the codeword z is assigned to; the others are
    ignored). Returns (..., d). Vectorised over every leading dimension.
    """
    if z.shape != g.shape or candidates.shape[:-2] + candidates.shape[-1:] != z.shape:
        raise ValueError(
            f"snap_gradient: z {tuple(z.shape)}, g {tuple(g.shape)} and candidates "
            f"{tuple(candidates.shape)} do not fit (want z, g (..., d), candidates (..., k, d))"
        )
    if select not in SELECT_RULES:
        raise ValueError(f"snap_gradient: select {select!r} is not one of {', '.join(SELECT_RULES)}")
    if select == "nearest":
        candidates = candidates[..., :1, :]
    directions = z.unsqueeze(-2) - candidates  # v_c: (..., k, d)
    lengths = torch.linalg.vector_norm(directions, dim=-1)  # |v_c|: (..., k)
    along = (directions @ g.unsqueeze(-1)).squeeze(-1)  # g . v_c: (..., k)
    # (g . v_c) / |v_c| ranks like cos(g, v_c), |g| being the same for every candidate; a
    # candidate on z gives no direction: its alignment is 0, so it never lies ahead
    alignment = (along / lengths).masked_fill_(lengths <= _TINY_LENGTH, 0.0)
    best_alignment, best = alignment.max(-1, keepdim=True)  # c*: (..., 1)
    best_direction = directions.gather(-2, best.unsqueeze(-1).expand(*best.shape, z.shape[-1]))
    # g_s = (g . v*) v* / |v*|^2
    snapped = (best_alignment / lengths.gather(-1, best)) * best_direction.squeeze(-2)
    # (1 - alpha) g + alpha g_s where c* lies ahead (g . v* > 0); g elsewhere
    return torch.where(best_alignment > 0, torch.lerp(g, snapped, alpha), g)


class _Snap(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, quantizer: Any, candidates: torch.Tensor,
                alpha: float, select: str) -> torch.Tensor:
        ctx.quantizer, ctx.alpha, ctx.select = quantizer, alpha, select
        ctx.save_for_backward(z.detach(), candidates)
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        z, candidates = ctx.saved_tensors
        to_snap, from_snap = ctx.quantizer.to_snap_space, ctx.quantizer.from_snap_space
        grad_s = to_snap(grad)
        snapped = snap_gradient(to_snap(z), grad_s, candidates, ctx.alpha, ctx.select)
        # g plus the snap's change, brought back: exactly g where nothing snaps (alpha = 0), not
        # g rotated there and back (OPQ's R^T R g differs from g by rounding)
        return grad + from_snap(snapped - grad_s), None, None, None, None


class GradientSnappingLayer(nn.Module):
    """Identity forward; backward snaps the gradient towards a neighbouring codeword.

    `quantizer` is any gslbench quantizer (or an object with `assign(z, k)` returning candidates
    (b, G, k, d / G) in its snap space, and `to_snap_space` / `from_snap_space`); it must be fitted
    before the layer snaps. While the quantizer is not fitted (warm-up), or in eval mode, the layer
    is a plain identity. `k`: candidates per sub-space (PQ/OPQ) or beam width (RQ/LSQ);
    `alpha`: snapping strength in [0, 1]; `select`: "aligned" or "nearest" (step 2). With
    "nearest" only the assigned codeword counts, so the quantizer is asked for one candidate
    whatever k is (for LSQ: the nearest of the reconstruction and its single-codebook changes,
    which is the reconstruction but in rare cases).
    """

    def __init__(self, quantizer: Any, k: int = 8, alpha: float = 1.0,
                 select: str = "aligned") -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise GslbenchError(f"GSL alpha {alpha} is outside [0, 1]")
        if k < 1:
            raise GslbenchError(f"GSL k {k} must be at least 1")
        if select not in SELECT_RULES:
            raise GslbenchError(f"GSL select {select!r} is not one of {', '.join(SELECT_RULES)}")
        self.quantizer, self.k, self.alpha, self.select = quantizer, k, alpha, select

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(b, d) -> (b, d), the same values; gradients flowing back are snapped."""
        if not (self.training and z.requires_grad and self.quantizer.is_fitted):
            return z
        k = 1 if self.select == "nearest" else self.k
        candidates = self.quantizer.assign(z.detach(), k).candidates
        return _Snap.apply(z, self.quantizer, candidates, self.alpha, self.select)

    def extra_repr(self) -> str:
        return (f"quantizer={type(self.quantizer).__name__}, k={self.k}, alpha={self.alpha}, "
                f"select={self.select}")
