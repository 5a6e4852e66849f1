"""The Gradient Snapping Layer against docs/design.md, section 5, on hand-made and random cases."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gslbench.errors import GslbenchError
from gslbench.methods.snapping import GradientSnappingLayer, snap_gradient


def reference_snap(z, g, candidates, alpha=1.0):
    """Steps 1-5 for one vector, written as a plain loop over the candidates."""
    best, best_cos = None, -float("inf")
    for c in candidates:
        v = z - c
        if v.norm() == 0:
            continue
        cos = float(g @ v / (g.norm() * v.norm()))
        if cos > best_cos:
            best, best_cos = v, cos
    if best is None or float(g @ best) <= 0:
        snapped = g
    else:
        snapped = (g @ best) / (best @ best) * best
    return (1 - alpha) * g + alpha * snapped


def random_case(seed, batch=64, k=8, d=6, groups=None):
    gen = torch.Generator().manual_seed(seed)
    lead = (batch,) if groups is None else (batch, groups)
    z = torch.randn(*lead, d, generator=gen, dtype=torch.float64)
    g = torch.randn(*lead, d, generator=gen, dtype=torch.float64)
    candidates = z.unsqueeze(-2) + torch.randn(*lead, k, d, generator=gen, dtype=torch.float64)
    return z, g, candidates


def test_hand_made_case_picks_the_best_aligned_codeword():
    z = torch.tensor([[0.0, 0.0]])
    g = torch.tensor([[1.0, 0.0]])  # descent moves z towards negative x
    candidates = torch.tensor([[[-1.0, 0.1], [0.0, 1.0], [1.0, 0.0]]])
    snapped = snap_gradient(z, g, candidates)
    v = z[0] - candidates[0, 0]
    expected = (g[0] @ v) / (v @ v) * v
    torch.testing.assert_close(snapped[0], expected)


def test_pass_through_when_no_candidate_lies_ahead():
    z = torch.tensor([[0.0, 0.0]])
    g = torch.tensor([[1.0, 0.0]])
    candidates = torch.tensor([[[1.0, 0.0], [2.0, 1.0], [0.5, -3.0]]])  # all on the +x side
    torch.testing.assert_close(snap_gradient(z, g, candidates), g)


def test_candidate_at_z_is_ignored():
    z = torch.tensor([[1.0, 1.0]])
    g = torch.tensor([[0.0, 1.0]])
    candidates = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    torch.testing.assert_close(snap_gradient(z, g, candidates), g)  # v = (0, 1) is parallel to g


@pytest.mark.parametrize("seed", range(5))
def test_random_cases_match_the_plain_loop_reference(seed):
    z, g, candidates = random_case(seed)
    snapped = snap_gradient(z, g, candidates, alpha=0.7)
    for i in range(len(z)):
        torch.testing.assert_close(snapped[i], reference_snap(z[i], g[i], candidates[i], 0.7))


@pytest.mark.parametrize("seed", range(5))
def test_snapped_gradient_descends_and_points_at_the_best_codeword(seed):
    z, g, candidates = random_case(seed, batch=256)
    snapped = snap_gradient(z, g, candidates)
    assert ((snapped * g).sum(-1) >= -1e-12).all()  # g_s . g >= 0
    directions = z.unsqueeze(1) - candidates
    cosine = torch.nn.functional.cosine_similarity(directions, g.unsqueeze(1), dim=-1)
    best = cosine.argmax(1)
    best_direction = directions[torch.arange(len(z)), best]
    ahead = cosine.amax(1) > 0
    assert ahead.any() and (~ahead).any()
    # parallel to z - c*: the cross-component vanishes
    unit = torch.nn.functional.normalize(best_direction, dim=1)
    residual = snapped - (snapped * unit).sum(1, keepdim=True) * unit
    assert residual[ahead].abs().max() < 1e-10
    torch.testing.assert_close(snapped[~ahead], g[~ahead])
    # its length is |g| cos(angle): the projection of g on z - c*
    torch.testing.assert_close(snapped[ahead].norm(dim=1),
                               (g.norm(dim=1) * cosine.amax(1))[ahead])


@pytest.mark.parametrize("seed", range(3))
def test_nearest_rule_snaps_towards_the_first_candidate_only(seed):
    z, g, candidates = random_case(seed, batch=128)
    snapped = snap_gradient(z, g, candidates, alpha=0.6, select="nearest")
    for i in range(len(z)):
        torch.testing.assert_close(snapped[i], reference_snap(z[i], g[i], candidates[i, :1], 0.6))
    assert not torch.allclose(snapped, snap_gradient(z, g, candidates, alpha=0.6))


def test_unknown_rule_is_rejected():
    z, g, candidates = random_case(0)
    with pytest.raises(ValueError, match="select"):
        snap_gradient(z, g, candidates, select="farthest")


def test_alpha_interpolates_between_g_and_the_snapped_gradient():
    z, g, candidates = random_case(7)
    torch.testing.assert_close(snap_gradient(z, g, candidates, alpha=0.0), g)
    full = snap_gradient(z, g, candidates, alpha=1.0)
    torch.testing.assert_close(snap_gradient(z, g, candidates, alpha=0.25), 0.75 * g + 0.25 * full)


def test_per_subspace_candidates_snap_each_subspace_independently():
    z, g, candidates = random_case(3, batch=16, groups=4)
    snapped = snap_gradient(z, g, candidates)
    for m in range(4):
        torch.testing.assert_close(snapped[:, m], snap_gradient(z[:, m], g[:, m], candidates[:, m]))


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_vectorised_no_python_loop_over_the_batch():
    counts = []
    for batch in (2, 500):
        z, g, candidates = random_case(0, batch=batch, groups=4)
        with OpCounter() as counter:
            snap_gradient(z, g, candidates)
        counts.append(counter.calls)
    assert counts[0] == counts[1]


def test_shape_mismatch_is_rejected():
    z, g, candidates = random_case(0)
    with pytest.raises(ValueError, match="do not fit"):
        snap_gradient(z, g[:, :3], candidates)


@dataclass
class FakeAssignment:
    reconstruction: torch.Tensor
    candidates: torch.Tensor


class RotatedGridQuantizer:
    """Two sub-spaces after an orthogonal rotation; candidates: the k nearest grid points."""

    is_fitted = True

    def __init__(self, dim=4, seed=0):
        self.asked = []  # the k of every assign call
        gen = torch.Generator().manual_seed(seed)
        self.rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
        offsets = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
        self.grid = torch.cartesian_prod(offsets, offsets)  # (9, 2) sub-codewords

    def to_snap_space(self, x):
        return (x @ self.rotation.T).reshape(len(x), 2, 2)

    def from_snap_space(self, x):
        return x.reshape(len(x), 4) @ self.rotation

    def assign(self, z, k):
        self.asked.append(k)
        sub = self.to_snap_space(z)
        distance = ((sub.unsqueeze(2) - self.grid) ** 2).sum(-1)
        nearest = distance.topk(k, dim=-1, largest=False).indices
        candidates = self.grid[nearest]
        return FakeAssignment(self.from_snap_space(candidates[:, :, 0]), candidates)


def test_layer_is_identity_forward_and_snaps_backward_in_the_rotated_space():
    quantizer = RotatedGridQuantizer()
    layer = GradientSnappingLayer(quantizer, k=3, alpha=0.8)
    z = torch.randn(32, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(32, 4, dtype=torch.float64)
    out = layer(z)
    torch.testing.assert_close(out, z)
    (out * weights).sum().backward()  # upstream gradient g = weights
    candidates = quantizer.assign(z.detach(), 3).candidates
    expected = quantizer.from_snap_space(snap_gradient(
        quantizer.to_snap_space(z.detach()), quantizer.to_snap_space(weights), candidates, 0.8))
    torch.testing.assert_close(z.grad, expected)
    assert ((z.grad * weights).sum(1) >= -1e-12).all()  # still a descent direction


def test_layer_with_the_nearest_rule_snaps_towards_the_nearest_grid_point():
    quantizer = RotatedGridQuantizer()
    layer = GradientSnappingLayer(quantizer, k=5, alpha=1.0, select="nearest")
    z = torch.randn(32, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(32, 4, dtype=torch.float64)
    (layer(z) * weights).sum().backward()
    assert quantizer.asked == [1]  # only the assigned codeword is needed
    sub, g = quantizer.to_snap_space(z.detach()), quantizer.to_snap_space(weights)
    expected = torch.empty_like(sub)
    for i in range(len(sub)):
        for m in range(2):
            nearest = min(quantizer.grid, key=lambda point: float(((sub[i, m] - point) ** 2).sum()))
            expected[i, m] = reference_snap(sub[i, m], g[i, m], nearest[None])
    torch.testing.assert_close(z.grad, quantizer.from_snap_space(expected))


def test_layer_is_plain_identity_in_eval_mode_and_before_the_quantizer_is_fitted():
    quantizer = RotatedGridQuantizer()
    layer = GradientSnappingLayer(quantizer).eval()
    z = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    layer(z).sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))
    quantizer.is_fitted = False
    layer.train()
    z.grad = None
    layer(z).sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))


@pytest.mark.parametrize("options", [{"alpha": 1.5}, {"alpha": -0.1}, {"k": 0}, {"select": "far"}])
def test_layer_rejects_bad_knobs(options):
    with pytest.raises(GslbenchError):
        GradientSnappingLayer(RotatedGridQuantizer(), **options)
