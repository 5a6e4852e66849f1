"""`ste-sync`: the straightened straight-through estimator (Huh, Cheung, Agrawal & Isola,
"Straightening Out the Straight-Through Estimator: Overcoming Optimization Challenges in Vector
Quantized Networks", ICML 2023), the parts that apply when the codebooks are refitted; implemented
here from the paper (the authors' library, vqtorch, is not a dependency: its layer owns and
learns its codebook).

Notation, in the quantizer's snap space flattened to (b, d) (`Quantizer.to_snap_space`: PQ's
sub-vectors side by side, OPQ's after its rotation, RQ's and LSQ's the vector itself): e the
encoder output, q its reconstruction by the refitted codebooks (no grad), g the similarity loss's
gradient.

- Affine re-parameterisation of the codebook: the loss sees q̃ = a ⊙ q + s, a per-dimension scale
  a = max(1 + α, A_MIN) and shift s shared by every codeword (for PQ/OPQ each sub-codebook's
  dimensions have their own; for RQ/LSQ the stages share a, their shifts add up to s). a > 0, so
  the map is invertible: the codebook keeps its affine span (every affine combination of
  codewords maps to the same combination of the mapped codewords) and no two codewords merge.
  α and s are learned by their own Adam (learning rate `ste_sync_affine_lr` times the run's
  `lr`, as the authors' scale of the affine learning rate), from the codebook side of the
  commitment loss and the synchronisation below: they let every codeword, used or not, follow
  the encoder between refits. At each refit they are reset to a = 1, s = 0: the refitted codebook
  itself, which already fits the encoder's outputs.
- Synchronized commitment loss (the paper's β and ν): forward q̃, backward g to e (the
  straight-through estimator) and ν g to q̃'s affine parameters, the codebook's update
  synchronized with the encoder's; plus (1 − β) · mean ‖e − sg(q̃)‖² (the encoder's commitment)
  + β · mean ‖sg(e) − q̃‖² (the codebook side, which moves only α and s here).
- Alternated optimization: gslbench's alternation of network epochs (the codebook fixed but for
  its affine) and codebook refits (faiss) is the paper's alternation of encoder and codebook
  updates, with the codebook solved to convergence.

Not kept: the gradient learning of the codewords themselves (the quantizer refits them) and the
assignment under the re-parameterised codebook: the codeword is the one the quantizer encodes
with, so what the loss sees stays tied to the codes the database gets. The affine's Adam steps at
the start of the next training step on the gradients the previous one left (the loop's optimizer
holds only the network's and the loss's parameters); the last step's are dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gslbench.lazy import lazy_import
from gslbench.methods.base import Method
from gslbench.quantizers import Quantizer
from gslbench.settings import Setting

torch = lazy_import("torch")

A_MIN = 1e-3  # the smallest scale a: the map stays invertible


class SteSyncMethod(Method):
    """The straight-through estimator on an affine re-parameterised codebook, with the
    synchronized commitment loss (the module docstring)."""

    name = "ste-sync"
    knobs = (
        Setting("ste_sync_beta", float, 0.95, "The straightened STE's commitment trade-off β: "
                "(1 − β) on the encoder's side, β on the codebook's.", low=0.0, high=1.0,
                symbol="β", space=("float", 0.5, 1.0)),
        Setting("ste_sync_nu", float, 0.2, "The straightened STE's synchronisation ν: the share "
                "of the loss's gradient the codebook's affine receives.", low=0.0, high=1.0,
                symbol="ν", space=("float", 0.0, 1.0)),
        Setting("ste_sync_affine_lr", float, 10.0, "The affine re-parameterisation's learning "
                "rate, a multiple of --lr.", low=0.0, symbol="η", space=("log", 0.1, 100.0)),
    )
    summary = "STE at an affine re-parameterised codebook, synchronized commitment (Huh et al.)"

    def __init__(self, config: Any, quantizer: Quantizer | None) -> None:
        super().__init__(config, quantizer)
        self.scale = self.shift = None  # (d,) float32 α and s, made on first use
        self._fitted_on: np.ndarray | None = None  # the codebooks they were reset for

    def reparameterise(self, q: torch.Tensor) -> torch.Tensor:
        """(..., d) reconstructions in the flattened snap space -> a ⊙ q + s, differentiable in
        the affine parameters."""
        return (1 + self.scale).clamp_min(A_MIN) * q + self.shift

    def representation(self, z: torch.Tensor) -> torch.Tensor:
        """(b, d) -> (b, d): q̃ forward; backward g to z and ν g to the affine; z itself before
        the codebooks are fitted (warm-up)."""
        if not self.quantizer.is_fitted:
            return z
        e, q_tilde = self._pair(z)
        nu = self.config.ste_sync_nu
        out = e + (q_tilde - e).detach() + nu * (q_tilde - q_tilde.detach())
        return self.quantizer.from_snap_space(out.view_as(self.quantizer.to_snap_space(z)))

    def penalty(self, z: torch.Tensor) -> torch.Tensor:
        """(1 − β) mean ‖e − sg(q̃)‖² + β mean ‖sg(e) − q̃‖²; 0 before the codebooks are fitted."""
        if not self.quantizer.is_fitted:
            return z.new_zeros(())
        e, q_tilde = self._pair(z)
        beta = self.config.ste_sync_beta
        return ((1 - beta) * ((e - q_tilde.detach()) ** 2).sum(1).mean()
                + beta * ((e.detach() - q_tilde) ** 2).sum(1).mean())

    def _pair(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, d) z -> its (b, d) flattened snap-space e (with z's grad) and q̃ (with the
        affine's), after the affine's pending step or reset."""
        self._update_affine(z.device)
        snap = self.quantizer.to_snap_space
        e = snap(z).flatten(1)
        q = snap(self.assignment(z).reconstruction).flatten(1)
        return e, self.reparameterise(q)

    def _update_affine(self, device: torch.device) -> None:
        """Reset α and s (and their Adam) when the codebooks were refitted, else take the step
        of the gradients the last training step left on them."""
        codebooks = self.quantizer.codebooks
        if self._fitted_on is None or not np.array_equal(codebooks, self._fitted_on):
            self._fitted_on = codebooks
            dim = self.quantizer.dim
            self.scale = torch.zeros(dim, device=device, requires_grad=True)
            self.shift = torch.zeros(dim, device=device, requires_grad=True)
            self.optimizer = torch.optim.Adam(
                [self.scale, self.shift], lr=self.config.ste_sync_affine_lr * self.config.lr)
        elif self.scale.grad is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
