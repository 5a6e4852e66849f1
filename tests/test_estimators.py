"""The field's current gradient estimators (issue 30): the rotation trick, DiVeQ and the
straightened STE, each against its paper's definition computed here by plain loops and explicit
matrices on a hand-made batch and small fitted quantizers; and `gslbench train` with each of
them and every quantizer on digits."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from test_methods import BITS, DIM, SUB_BITS, faiss_reconstruction, make_method, unit_rows

from gslbench.cli import cli
from gslbench.layout import resolve_run
from gslbench.methods.ste_sync import A_MIN
from gslbench.quantizers import make_quantizer

QUANTIZERS = ("pq", "opq", "rq", "lsq")  # PQ/OPQ: 2 sub-spaces of 4 dimensions; RQ/LSQ: 2 stages
BATCH = unit_rows(6, seed=1)  # (6, 8)
UPSTREAM = torch.randn(6, DIM, generator=torch.Generator().manual_seed(4))  # dLoss/d(output)


@pytest.fixture(scope="module")
def quantizers():
    train = unit_rows(256, seed=0).numpy()
    return {name: make_quantizer(name, DIM, BITS, sub_bits=SUB_BITS, seed=0).fit(train)
            for name in QUANTIZERS}


def groups(quantizer):
    """(R, G): the orthonormal map into the snap space and its number of groups."""
    rotation = (torch.from_numpy(quantizer.rotation) if quantizer.name == "opq"
                else torch.eye(DIM))
    return rotation, (quantizer.n_codebooks if quantizer.name in ("pq", "opq") else 1)


def backward(method, z, upstream=UPSTREAM, penalty=False):
    """z's gradient of sum(representation(z) * upstream) (+ the penalty)."""
    z = z.clone().requires_grad_()
    out = method.representation(z)
    loss = (out * upstream).sum() + (method.penalty(z) if penalty else 0)
    loss.backward()
    return out.detach(), z.grad


# --- the rotation trick ----------------------------------------------------------------------

def householder(v):
    """I − 2 v vᵀ for a unit vector v."""
    return torch.eye(len(v), dtype=v.dtype) - 2 * torch.outer(v, v)


def paper_rotation(e, q):
    """λ R for one (d,) pair: R the product of the two Householder reflections taking ê onto
    −q̂ (across the plane orthogonal to ê + q̂) and −q̂ onto q̂; λ = ‖q‖ / ‖e‖."""
    e_hat, q_hat = e / e.norm(), q / q.norm()
    rotation = householder(q_hat) @ householder((e_hat + q_hat) / (e_hat + q_hat).norm())
    torch.testing.assert_close(rotation @ e_hat, q_hat, rtol=0, atol=1e-5)  # the reference holds
    torch.testing.assert_close(rotation.T @ rotation, torch.eye(len(e), dtype=e.dtype), rtol=0,
                               atol=1e-5)
    return q.norm() / e.norm() * rotation


@pytest.mark.parametrize("name", QUANTIZERS)
def test_rotation_forward_is_the_codeword_and_backward_the_papers_rotation(quantizers, name):
    quantizer = quantizers[name]
    method = make_method("rotation", quantizer, rotation_beta=0.0)
    out, grad = backward(method, BATCH)
    codewords = faiss_reconstruction(quantizer, BATCH)
    torch.testing.assert_close(out, codewords, rtol=0, atol=1e-6)
    rotation, n_groups = groups(quantizer)
    size = DIM // n_groups
    expected = []
    for row, g, q in zip(BATCH.double(), UPSTREAM.double(), codewords.double(), strict=True):
        e_snap, g_snap, q_snap = (rotation.double() @ v for v in (row, g, q))
        parts = []
        for m in range(n_groups):
            part = slice(m * size, (m + 1) * size)
            parts.append(paper_rotation(e_snap[part], q_snap[part]).T @ g_snap[part])
        expected.append(rotation.double().T @ torch.cat(parts))
    torch.testing.assert_close(grad.double(), torch.stack(expected), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(grad, UPSTREAM, atol=1e-3)  # not the straight-through gradient


def test_rotation_adds_the_commitment_gradient(quantizers):
    quantizer, beta = quantizers["pq"], 0.5
    _, plain = backward(make_method("rotation", quantizer, rotation_beta=0.0), BATCH)
    _, committed = backward(make_method("rotation", quantizer, rotation_beta=beta), BATCH,
                            penalty=True)
    q = faiss_reconstruction(quantizer, BATCH)
    torch.testing.assert_close(committed - plain, 2 * beta * (BATCH - q) / len(BATCH),
                               rtol=1e-4, atol=1e-6)


def test_rotation_of_a_vector_on_its_codeword_direction_is_a_rescaling():
    """e parallel to q: R = I, the gradient is only rescaled by ‖q‖ / ‖e‖."""
    from gslbench.methods.rotation import rotation_trick

    q = torch.tensor([[0.0, 3.0, 4.0]])
    e = (q / 10).requires_grad_()  # ‖e‖ = 0.5, ‖q‖ = 5
    g = torch.tensor([[1.0, -2.0, 0.5]])
    (rotation_trick(e, q) * g).sum().backward()
    torch.testing.assert_close(e.grad, 10 * g)


# --- DiVeQ -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", QUANTIZERS)
def test_diveq_training_output_is_its_formula_with_the_seeded_noise(quantizers, name):
    quantizer, sigma = quantizers[name], 0.05
    method = make_method("diveq", quantizer, diveq_sigma=sigma, seed=3)
    out, grad = backward(method, BATCH)
    noise = torch.randn(BATCH.shape, generator=torch.Generator().manual_seed(3))  # ε, fixed
    c = faiss_reconstruction(quantizer, BATCH)
    expected_out, expected_grad = [], []
    for z, c_i, eps, g in zip(BATCH, c, noise, UPSTREAM, strict=True):
        blurred = c_i - z + sigma * eps
        d = blurred / blurred.norm()
        u = (c_i - z) / (c_i - z).norm()
        expected_out.append(z + (c_i - z).norm() * d)
        expected_grad.append(g - (g @ d) * u)  # the gradient flows through ‖c − z‖ only
    torch.testing.assert_close(out, torch.stack(expected_out), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, torch.stack(expected_grad), rtol=1e-4, atol=1e-5)


def test_diveq_evaluation_output_is_the_codeword_and_no_noise_gives_it_too(quantizers):
    quantizer = quantizers["pq"]
    c = faiss_reconstruction(quantizer, BATCH)
    evaluated = make_method("diveq", quantizer).representation(BATCH)  # no gradient asked
    torch.testing.assert_close(evaluated, c, rtol=0, atol=1e-6)
    out, _ = backward(make_method("diveq", quantizer, diveq_sigma=0.0), BATCH)
    torch.testing.assert_close(out, c, rtol=0, atol=1e-5)  # z + ‖c − z‖ (c − z)/‖c − z‖ = c


def test_diveq_noise_differs_across_seeds_and_steps(quantizers):
    quantizer = quantizers["pq"]
    method = make_method("diveq", quantizer, diveq_sigma=0.05, seed=0)
    first, second = (backward(method, BATCH)[0] for _ in range(2))
    other = backward(make_method("diveq", quantizer, diveq_sigma=0.05, seed=1), BATCH)[0]
    assert not torch.allclose(first, second) and not torch.allclose(first, other)


# --- the straightened STE --------------------------------------------------------------------

def test_ste_sync_reparameterisation_keeps_the_codebooks_span():
    """a ⊙ c + s with a > 0 (also where 1 + α < 0: clamped) maps affine combinations of
    codewords to the same combinations, keeps the rank of the centred codebook and merges no
    two codewords."""
    codebook = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0], [1.0, 1.0, 2.0], [2.0, 3.0, 2.0]])
    method = make_method("ste-sync", None)
    method.scale = torch.tensor([0.5, -3.0, 1.0])  # a = 1.5, A_MIN, 2
    method.shift = torch.tensor([0.1, -0.2, 0.3])
    mapped = method.reparameterise(codebook)
    torch.testing.assert_close(mapped[:, 1], A_MIN * codebook[:, 1] - 0.2)
    weights = torch.tensor([0.5, -1.0, 2.0, -0.5])  # sum 1: an affine combination
    torch.testing.assert_close(method.reparameterise(weights @ codebook), weights @ mapped)
    for cb in (codebook, mapped):
        assert torch.linalg.matrix_rank(cb - cb.mean(0)) == 2  # the affine span: a plane
    assert torch.cdist(mapped, mapped).add(torch.eye(4)).min() > 0


@pytest.mark.parametrize("name", QUANTIZERS)
def test_ste_sync_gradients_are_the_straight_through_and_synchronized_ones(quantizers, name):
    quantizer, beta, nu = quantizers[name], 0.9, 0.3
    method = make_method("ste-sync", quantizer, ste_sync_beta=beta, ste_sync_nu=nu)
    out, grad = backward(method, BATCH, penalty=True)
    q = faiss_reconstruction(quantizer, BATCH)
    torch.testing.assert_close(out, q, rtol=0, atol=1e-6)  # after a refit: the codebook itself
    rotation, _ = groups(quantizer)
    e_snap, q_snap, g_snap = BATCH @ rotation.T, q @ rotation.T, UPSTREAM @ rotation.T
    b = len(BATCH)
    expected = UPSTREAM + 2 * (1 - beta) * (BATCH - q) / b  # STE + the encoder's commitment
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)
    # the affine (α, s) gets ν g and the codebook side of the commitment, in the snap space
    residual = 2 * beta * (q_snap - e_snap) / b
    torch.testing.assert_close(method.shift.grad, nu * g_snap.sum(0) + residual.sum(0),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(method.scale.grad, ((nu * g_snap + residual) * q_snap).sum(0),
                               rtol=1e-4, atol=1e-6)


def test_ste_sync_affine_steps_then_resets_at_a_refit(quantizers):
    quantizer = make_quantizer("pq", DIM, BITS, sub_bits=SUB_BITS, seed=0)
    quantizer.fit(unit_rows(256, seed=0).numpy())
    method = make_method("ste-sync", quantizer)
    backward(method, BATCH, penalty=True)
    out, _ = backward(method, BATCH, penalty=True)  # the affine took the first step's gradients
    assert not torch.allclose(out, faiss_reconstruction(quantizer, BATCH), atol=1e-6)
    quantizer.fit(unit_rows(256, seed=5).numpy(), warm_start=True)
    out, _ = backward(method, BATCH)
    torch.testing.assert_close(out, faiss_reconstruction(quantizer, BATCH), rtol=0, atol=1e-6)


# --- gslbench train, each estimator with each quantizer -------------------------------------

@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("estimators")
    for step in (("download", "digits"), ("features", "digits")):
        run_cli(root, *step)
    return root


def run_cli(root, *args):
    result = CliRunner().invoke(cli, ["--data-dir", str(root / "data"), "--results-dir",
                                      str(root / "results"), "-q", *args])
    assert result.exit_code == 0, result.output
    return result.output.strip()


@pytest.mark.slow
@pytest.mark.parametrize("quantizer", QUANTIZERS)
@pytest.mark.parametrize("method", ["rotation", "diveq", "ste-sync"])
def test_train_runs_each_estimator_with_each_quantizer_on_digits(digits_root, method, quantizer):
    run = run_cli(digits_root, "train", "-d", "digits", "--method", method, "--quantizer",
                  quantizer, "--bits", "16", "--sub-bits", "4", "--epochs", "3",
                  "--warmup-epochs", "1", "--epochs-per-refit", "1")
    run_cli(digits_root, "encode", run)
    run_cli(digits_root, "evaluate", run)
    record = json.loads(resolve_run(digits_root / "results", run).metrics_file().read_text())
    assert 0 < record["map"] <= 1 and record["label"].startswith(method)
    assert len(record["usage"]["train"]["perplexity"]) == 4  # 16 bits of 4-bit codebooks
