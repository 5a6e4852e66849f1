"""`rotation`: the rotation trick (Fifty et al., "Restructuring Vector Quantization with the
Rotation Trick", ICLR 2025), implemented here from the paper: vector-quantize-pytorch has it only
as an internal helper of its quantizer layer, not as a public function to depend on.

Forward: the codeword q, exactly (as `ste`). Backward: for the encoder output e and its codeword
q, let ê = e / ‖e‖, q̂ = q / ‖q‖, r = (ê + q̂) / ‖ê + q̂‖ and

    R = I − 2 r rᵀ + 2 q̂ êᵀ,   λ = ‖q‖ / ‖e‖,

the rotation taking ê onto q̂ (the product of the Householder reflections I − 2 q̂q̂ᵀ and
I − 2 r rᵀ) and the norm ratio, so that q = λ R e. Treating λ R as a constant, the loss sees
λ R e; the gradient g at q reaches e as λ Rᵀ g: rotated with the angle between e and its codeword
and rescaled by the norm ratio, where the straight-through estimator copies g unchanged.

Where it applies: in the snap space of the quantizer, group by group (`Quantizer.to_snap_space`):
each sub-vector with its sub-codeword for PQ, the same in the rotated space for OPQ (its rotation
is orthonormal, so gradients rotate back with it), and the whole vector with its full
reconstruction (the sum of the M stage codewords) for RQ and LSQ.

Kept from the paper: the forward, the backward and the commitment β · ‖e − sg(q)‖² of the VQ-VAE
objective the paper trains with (qloss's penalty under its own knob, as `ste`'s). Not kept: the
codebook loss ‖sg(e) − q‖², which would move the codewords by gradient; in gslbench the quantizer
refits its codebooks (faiss) between epochs, so no gradient reaches them.
"""

from __future__ import annotations

from gslbench.lazy import lazy_import
from gslbench.methods.qloss import QLossMethod
from gslbench.settings import Setting

torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")

_TINY = 1e-12  # norms below this: the direction is taken as 0 (F.normalize's eps)


def rotation_trick(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(..., d) encoder outputs e (with grad) and their codewords q (no grad) -> (..., d): q
    forward, λ Rᵀ g backward (the module docstring), vectorised over the leading dimensions."""
    q = q.detach()
    e_norm = torch.linalg.vector_norm(e.detach(), dim=-1, keepdim=True)
    q_norm = torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    e_unit, q_unit = F.normalize(e.detach(), dim=-1, eps=_TINY), F.normalize(q, dim=-1, eps=_TINY)
    r = F.normalize(e_unit + q_unit, dim=-1, eps=_TINY)
    # λ R e = λ (e − 2 (r·e) r + 2 (ê·e) q̂), with R and λ constants: linear in e
    rotated = e - 2 * (e * r).sum(-1, keepdim=True) * r + 2 * (e * e_unit).sum(-1, keepdim=True) * q_unit
    transformed = q_norm / e_norm.clamp_min(_TINY) * rotated
    return q + (transformed - transformed.detach())


class RotationMethod(QLossMethod):
    """Forward q(z); backward the gradient rotated by the rotation trick, per snap group; plus
    the commitment β · mean ‖z − sg(q(z))‖²."""

    name = "rotation"
    knobs = (Setting("rotation_beta", float, 0.25, "Weight of the rotation trick's commitment term "
                     "(0: none).", low=0.0, symbol="β", space=("log", 1e-3, 10.0)),)
    summary = "similarity loss at q(z), gradient rotated onto z by the rotation trick, + β · commitment"
    weight_knob = "rotation_beta"

    def representation(self, z: torch.Tensor) -> torch.Tensor:
        """(b, d) -> (b, d): exactly q(z) forward, the rotation trick's gradient backward; z
        itself before the codebooks are fitted (warm-up)."""
        if not self.quantizer.is_fitted:
            return z
        snap = self.quantizer.to_snap_space
        reconstruction = self.assignment(z).reconstruction
        rotated = self.quantizer.from_snap_space(rotation_trick(snap(z), snap(reconstruction)))
        return reconstruction + (rotated - rotated.detach())  # q(z) forward, bit for bit
