"""The trainable-quantizer methods (ste, soft, gumbel) and GSL's codeword rule, each against a
plain-loop reference written here, on a hand-made batch and small fitted quantizers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gslbench.config import RunConfig
from gslbench.errors import GslbenchError
from gslbench.methods import BUILTIN_METHODS, METHODS
from gslbench.methods.loop import train_step
from gslbench.methods.losses import PairwiseCosineLoss
from gslbench.methods.model import build_model
from gslbench.quantizers import make_quantizer
from gslbench.quantizers.base import Assignment
from gslbench.quantizers.pq import PQ
from gslbench.testing import check_method

DIM, BITS, SUB_BITS = 8, 8, 4  # PQ/OPQ: 2 sub-spaces of 4 dimensions, 16 codewords each
LABELS = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1], [1, 1], [0, 1]], dtype=torch.uint8)


def unit_rows(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, DIM, generator=gen), dim=1)


BATCH = unit_rows(len(LABELS), seed=1)  # (6, 8) unit-norm representations


@pytest.fixture(scope="module")
def quantizers():
    train = unit_rows(256, seed=0).numpy()
    return {name: make_quantizer(name, DIM, BITS, sub_bits=SUB_BITS, seed=0).fit(train)
            for name in ("pq", "opq", "rq", "lsq")}


def make_method(name, quantizer, **knobs):
    config = RunConfig(method=name, dim_out=DIM, bits=BITS, sub_bits=SUB_BITS, **knobs)
    return METHODS[name](config, quantizer)


def faiss_reconstruction(quantizer, z):
    """q(z) by faiss's encode and decode: (b, d) -> (b, d)."""
    return torch.from_numpy(quantizer.decode(quantizer.encode(z.detach().numpy())))


# --- plain-loop references for PQ / OPQ ------------------------------------------------------

def rotation(quantizer):
    return torch.from_numpy(quantizer.rotation) if quantizer.name == "opq" else torch.eye(DIM)


def loop_candidates(quantizer, row, k):
    """For one (d,) vector: per sub-space, the k nearest sub-codewords as (squared distance,
    codeword) pairs, nearest first, found by a loop over the codebook."""
    x = rotation(quantizer) @ row
    codebooks = torch.from_numpy(quantizer.codebooks)
    n_sub, _, dsub = codebooks.shape
    groups = []
    for m in range(n_sub):
        sub = x[m * dsub:(m + 1) * dsub]
        scored = sorted((float(((sub - word) ** 2).sum()), j) for j, word in enumerate(codebooks[m]))
        groups.append([(distance, codebooks[m, j]) for distance, j in scored[:k]])
    return groups


def loop_weighted_mean(groups, tau):
    """Per group, sum_j softmax(-d_j / tau)_j r_j, by loops; the groups joined: (d,) in snap space."""
    parts = []
    for group in groups:
        scores = [math.exp(-(distance - group[0][0]) / tau) for distance, _ in group]
        parts.append(sum(score / sum(scores) * word for score, (_, word) in zip(scores, group,
                                                                                  strict=True)))
    return torch.cat(parts)


def loop_soft(quantizer, z, k, tau):
    """The soft reconstruction of each row of z (b, d), mapped back from the snap space."""
    return torch.stack([rotation(quantizer).T @ loop_weighted_mean(loop_candidates(quantizer, row, k),
                                                                   tau) for row in z])


# --- ste ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pq", "opq", "rq", "lsq"])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_ste_gradient_is_the_loss_gradient_at_q_plus_the_commitment(quantizers, name, beta):
    quantizer, loss_fn = quantizers[name], PairwiseCosineLoss(2, DIM, 0.0)
    method = make_method("ste", quantizer, ste_beta=beta)
    z = BATCH.clone().requires_grad_()
    represented = method.representation(z)
    (loss_fn(represented, LABELS) + method.penalty(z)).backward()

    q = faiss_reconstruction(quantizer, BATCH).requires_grad_()
    loss_fn(q, LABELS).backward()
    expected = q.grad.clone()
    for i in range(len(BATCH)):
        expected[i] += 2 * beta * (BATCH[i] - q[i].detach()) / len(BATCH)
    torch.testing.assert_close(represented.detach(), q.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(z.grad, expected, rtol=1e-4, atol=1e-6)


def test_ste_is_plain_training_before_the_codebooks_are_fitted():
    method = make_method("ste", make_quantizer("pq", DIM, BITS, sub_bits=SUB_BITS), ste_beta=1.0)
    z = BATCH.clone().requires_grad_()
    assert method.representation(z) is z and method.penalty(z).item() == 0.0


class ZeroErrorPQ(PQ):
    """A PQ of zero quantization error: every z is its own reconstruction and only candidate."""

    def _assign(self, z, k):
        no_distance = z.new_zeros(len(z), self.n_groups, 1)
        return Assignment(z.clone(), self.to_snap_space(z).unsqueeze(2), no_distance)


def train_steps(name, quantizer, steps=5, **knobs):
    """The model's parameters after `steps` library train_steps on one batch (seeded init)."""
    torch.manual_seed(0)
    config = RunConfig(method=name, dim_out=DIM, bits=BITS, sub_bits=SUB_BITS, hidden=16, **knobs)
    model = build_model(config, dim_in=5)
    features = torch.randn(len(LABELS), 5, generator=torch.Generator().manual_seed(2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    method = METHODS[name](config, quantizer)
    for _ in range(steps):
        train_step(model, method, PairwiseCosineLoss(2, DIM, 0.0), optimizer, features, LABELS)
    return model.state_dict()


def test_ste_with_a_quantizer_of_zero_error_trains_like_two_step(quantizers):
    exact = ZeroErrorPQ(DIM, BITS, sub_bits=SUB_BITS).fit(unit_rows(256, seed=0).numpy())
    two_step = train_steps("two-step", None)
    ste = train_steps("ste", exact, ste_beta=1.0)
    for name, value in two_step.items():
        torch.testing.assert_close(ste[name], value, rtol=0, atol=0)
    lossy = train_steps("ste", quantizers["pq"], ste_beta=1.0)
    assert not torch.equal(lossy["layers.0.weight"], two_step["layers.0.weight"])


def test_a_step_assigns_its_batch_once(quantizers):
    calls = []

    class Counting(PQ):
        def _assign(self, z, k):
            calls.append(k)
            return super()._assign(z, k)

    counting = Counting(DIM, BITS, sub_bits=SUB_BITS).fit(unit_rows(256, seed=0).numpy())
    train_steps("ste", counting, steps=3, ste_beta=1.0)
    assert calls == [1, 1, 1]


# --- soft -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pq", "opq"])
@pytest.mark.parametrize("k, tau", [(1, 0.05), (4, 0.05), (16, 0.2)])
def test_soft_forward_is_the_weighted_mean_of_the_nearest_sub_codewords(quantizers, name, k, tau):
    method = make_method("soft", quantizers[name], soft_k=k, soft_tau=tau)
    torch.testing.assert_close(method.representation(BATCH.clone()),
                               loop_soft(quantizers[name], BATCH, k, tau), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["rq", "lsq"])
def test_soft_forward_is_the_weighted_mean_over_the_beam(quantizers, name):
    quantizer, k, tau = quantizers[name], 6, 0.02
    candidates = quantizer.assign(BATCH, k).candidates  # (b, 1, k, d): whole reconstructions
    expected = []
    for i, row in enumerate(BATCH):
        beam = [(float(((row - c) ** 2).sum()), c) for c in candidates[i, 0]]
        expected.append(loop_weighted_mean([beam], tau))
    method = make_method("soft", quantizer, soft_k=k, soft_tau=tau)
    torch.testing.assert_close(method.representation(BATCH.clone()), torch.stack(expected),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["pq", "opq", "rq"])
def test_soft_tends_to_the_hard_reconstruction_as_tau_goes_to_zero(quantizers, name):
    method = make_method("soft", quantizers[name], soft_tau=1e-7)
    torch.testing.assert_close(method.representation(BATCH.clone()),
                               faiss_reconstruction(quantizers[name], BATCH), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["pq", "opq"])
def test_soft_with_a_large_tau_tends_to_the_candidates_mean(quantizers, name):
    k = 5
    method = make_method("soft", quantizers[name], soft_k=k, soft_tau=1e7)
    means = []
    for row in BATCH:
        groups = loop_candidates(quantizers[name], row, k)
        means.append(rotation(quantizers[name]).T @ torch.cat(
            [sum(word for _, word in group) / k for group in groups]))
    torch.testing.assert_close(method.representation(BATCH.clone()), torch.stack(means),
                               rtol=0, atol=1e-5)


def loop_relaxed_loss(quantizer, z, upstream, k, tau, noise=None):
    """sum_i <relaxed_i, upstream_i>, the relaxed reconstruction built by loops from z (with
    grad): per sub-space sum_j w_j r_j, w = softmax(-||z_g - r_j||^2 / tau + noise_j)."""
    total = 0.0
    for i in range(len(z)):
        for m, group in enumerate(loop_candidates(quantizer, z[i].detach(), k)):
            sub = z[i, m * 4:(m + 1) * 4]
            scores = [torch.exp(-((sub - word) ** 2).sum() / tau
                                + (0.0 if noise is None else noise[i, m, j]))
                      for j, (_, word) in enumerate(group)]
            relaxed = sum(s / sum(scores) * word for s, (_, word) in zip(scores, group, strict=True))
            total = total + (relaxed * upstream[i, m * 4:(m + 1) * 4]).sum()
    return total


UPSTREAM = torch.randn(len(BATCH), DIM, generator=torch.Generator().manual_seed(9))


def test_soft_gradient_is_that_of_the_weighted_mean_in_z(quantizers):
    quantizer, k, tau = quantizers["pq"], 4, 0.1
    z = BATCH.clone().requires_grad_()
    (make_method("soft", quantizer, soft_k=k, soft_tau=tau).representation(z) * UPSTREAM).sum().backward()
    reference = BATCH.clone().requires_grad_()
    loop_relaxed_loss(quantizer, reference, UPSTREAM, k, tau).backward()
    torch.testing.assert_close(z.grad, reference.grad, rtol=1e-4, atol=1e-6)
    assert z.grad.abs().max() > 0.1  # the weights carry a real gradient


@pytest.mark.parametrize("name", ["pq", "opq", "rq", "lsq"])
def test_assignment_distances_are_those_of_the_candidates(quantizers, name):
    quantizer = quantizers[name]
    assignment = quantizer.assign(BATCH, 5)
    for i, row in enumerate(quantizer.to_snap_space(BATCH)):
        for g, group in enumerate(assignment.candidates[i]):
            expected = torch.stack([((row[g] - word) ** 2).sum() for word in group])
            torch.testing.assert_close(assignment.distances[i, g], expected, rtol=0, atol=1e-6)


# --- gumbel ----------------------------------------------------------------------------------

def test_gumbel_forward_is_one_of_the_candidates_of_each_sub_space(quantizers):
    quantizer, k = quantizers["pq"], 4
    chosen = make_method("gumbel", quantizer, gumbel_k=k, gumbel_tau=1.0).representation(BATCH)
    picks = set()
    for i, row in enumerate(BATCH):
        for m, group in enumerate(loop_candidates(quantizer, row, k)):
            sub = chosen[i, m * 4:(m + 1) * 4]
            matches = [j for j, (_, word) in enumerate(group) if torch.equal(sub, word)]
            assert len(matches) == 1, (i, m)
            picks.add(matches[0])
    assert len(picks) > 1  # at tau = 1 the samples are not all the nearest codeword


def test_gumbel_forward_is_one_of_the_beam_reconstructions(quantizers):
    quantizer = quantizers["rq"]
    chosen = make_method("gumbel", quantizer, gumbel_k=4, gumbel_tau=1.0).representation(BATCH)
    beam = quantizer.assign(BATCH, 4).candidates[:, 0]
    for i in range(len(BATCH)):
        assert sum(torch.equal(chosen[i], reconstruction) for reconstruction in beam[i]) >= 1


def test_gumbel_is_reproducible_for_a_seed_and_differs_across_seeds(quantizers):
    def samples(seed):
        method = make_method("gumbel", quantizers["pq"], gumbel_tau=1.0, seed=seed)
        return torch.stack([method.representation(BATCH) for _ in range(3)])

    torch.testing.assert_close(samples(3), samples(3), rtol=0, atol=0)
    assert not torch.equal(samples(3), samples(4))


def test_gumbel_samples_the_candidates_with_the_soft_weights(quantizers):
    """Gumbel-max: candidate j is drawn with probability softmax(-d / tau)_j (5 sigma)."""
    quantizer, k, tau, draws = quantizers["pq"], 4, 0.1, 4000
    method = make_method("gumbel", quantizer, gumbel_k=k, gumbel_tau=tau)
    chosen = method.representation(BATCH[:1].expand(draws, DIM).clone())
    group = loop_candidates(quantizer, BATCH[0], k)[0]
    scores = [math.exp(-(distance - group[0][0]) / tau) for distance, _ in group]
    for (_, word), score in zip(group, scores, strict=True):
        p = score / sum(scores)
        frequency = (chosen[:, :4] == word).all(1).float().mean().item()
        assert abs(frequency - p) <= 5 * math.sqrt(p * (1 - p) / draws) + 1e-3


def test_gumbel_gradient_is_that_of_the_relaxed_mean_with_the_same_noise(quantizers):
    quantizer, k, tau, seed = quantizers["pq"], 4, 0.2, 5
    method = make_method("gumbel", quantizer, gumbel_k=k, gumbel_tau=tau, seed=seed)
    z = BATCH.clone().requires_grad_()
    (method.representation(z) * UPSTREAM).sum().backward()

    uniform = torch.rand(len(BATCH), 2, k, generator=torch.Generator().manual_seed(seed))
    noise = -(-uniform.log()).log()  # Gumbel(0, 1), drawn as the run draws it
    reference = BATCH.clone().requires_grad_()
    loop_relaxed_loss(quantizer, reference, UPSTREAM, k, tau, noise).backward()
    torch.testing.assert_close(z.grad, reference.grad, rtol=1e-4, atol=1e-6)


# --- gsl_select ------------------------------------------------------------------------------

def loop_snap_towards(z, g, target, alpha):
    """Steps 3-5 of docs/design.md, section 5, towards one given codeword, for one sub-vector."""
    v = z - target
    if v.norm() <= 1e-6 or float(g @ v) <= 0:
        return g
    return (1 - alpha) * g + alpha * (g @ v) / (v @ v) * v


@pytest.mark.parametrize("name", ["pq", "opq"])
def test_gsl_nearest_snaps_towards_the_assigned_codeword(quantizers, name):
    quantizer, alpha = quantizers[name], 0.7
    upstream = torch.randn(len(BATCH), DIM, generator=torch.Generator().manual_seed(4))
    grads = {}
    for select in ("nearest", "aligned"):
        method = make_method("gsl", quantizer, gsl_select=select, gsl_alpha=alpha)
        z = BATCH.clone().requires_grad_()
        (method.representation(z) * upstream).sum().backward()
        grads[select] = z.grad
    rot = rotation(quantizer)
    expected = []
    for i, row in enumerate(BATCH):
        x, g = rot @ row, rot @ upstream[i]
        parts = [loop_snap_towards(x[m * 4:(m + 1) * 4], g[m * 4:(m + 1) * 4], group[0][1], alpha)
                 for m, group in enumerate(loop_candidates(quantizer, row, 1))]
        expected.append(rot.T @ torch.cat(parts))
    torch.testing.assert_close(grads["nearest"], torch.stack(expected), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(grads["nearest"], grads["aligned"])  # the rule matters here


@pytest.mark.parametrize("method, knobs, option", [
    ("gsl", {"gsl_k": 17}, "--gsl-k 17"),
    ("soft", {"soft_k": 17}, "--soft-k 17"),
    ("gumbel", {"gumbel_k": 17}, "--gumbel-k 17"),
])
@pytest.mark.parametrize("quantizer", ["pq", "rq"])
def test_more_candidates_than_codewords_is_refused_naming_the_option(method, knobs, option,
                                                                      quantizer):
    with pytest.raises(GslbenchError, match=f"^{option} exceeds the codebook size 16 "):
        RunConfig(dataset="digits", method=method, quantizer=quantizer, bits=8, sub_bits=4,
                  **knobs)
    RunConfig(dataset="digits", method=method, quantizer=quantizer, bits=8, sub_bits=4,
              **{name: 16 for name in knobs})  # every codeword: accepted


def test_gsl_nearest_ignores_its_k():
    config = RunConfig(dataset="digits", method="gsl", quantizer="pq", bits=8, sub_bits=4,
                       gsl_k=32, gsl_select="nearest")
    assert config.gsl_k == 32


@pytest.mark.parametrize("name", BUILTIN_METHODS)
def test_every_built_in_method_passes_the_checks_a_plugin_must_pass(name):
    """gslbench.testing, the kit plugin authors run, on the built-ins."""
    check_method(BUILTIN_METHODS[name])
