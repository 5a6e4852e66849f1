"""gslbench.quantizers against faiss's own objects, brute force and the literature's ranking."""

import re

import faiss
import h5py
import numpy as np
import pytest
import torch

from gslbench.errors import GslbenchError
from gslbench.quantizers import (
    QUANTIZERS,
    AdcSearch,
    Assignment,
    FlatSearch,
    Identity,
    Quantizer,
    load_quantizer,
    make_quantizer,
    make_search,
    save_quantizer,
)
from gslbench.quantizers.base import restart_seed
from gslbench.quantizers.candidates import k_smallest
from gslbench.quantizers.lsq import LSQ
from gslbench.quantizers.opq import OPQ
from gslbench.quantizers.pq import PQ
from gslbench.quantizers.rq import RQ

DIM, BITS = 16, 16  # 2 codebooks of 256 codewords
NAMES = ("pq", "opq", "rq", "lsq")
FAST = {"pq": {}, "opq": {"opq_iters": 10}, "rq": {}, "lsq": {"train_iters": 5}}


def correlated(n: int, dim: int = DIM, decay: float = 6.0, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 anisotropic Gaussian (std exp(-j / decay)) under a random rotation."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    scales = np.exp(-np.arange(dim) / decay)
    return ((rng.standard_normal((n, dim)) * scales) @ rotation.T).astype(np.float32)


TRAIN = correlated(1200)
TEST = correlated(300, seed=1)


def fitted_quantizer(name: str, sub_bits: int = 8, seed: int = 0, **options) -> Quantizer:
    return make_quantizer(name, DIM, BITS, sub_bits, seed, **{**FAST[name], **options}).fit(TRAIN)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fitted(one_thread) -> dict:
    return {name: fitted_quantizer(name) for name in NAMES}


def brute_force(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    return ((queries[:, None, :].astype(np.float64) - database[None]) ** 2).sum(-1)


# ----------------------------------------------------------------------------- exact against faiss


def test_interface_attributes(fitted):
    pq, opq, rq, lsq = (fitted[name] for name in NAMES)
    assert QUANTIZERS == {"pq": PQ, "opq": OPQ, "rq": RQ, "lsq": LSQ}
    assert all(type(q) is QUANTIZERS[name] and q.name == name for name, q in fitted.items())
    for q in fitted.values():
        assert (q.dim, q.bits, q.sub_bits, q.n_codebooks, q.codebook_size, q.code_bytes) == (
            DIM, BITS, 8, 2, 256, 2)
        assert q.is_fitted and q.encode(TEST).dtype == np.uint8
    assert pq.codebooks.shape == opq.codebooks.shape == (2, 256, 8)
    assert rq.codebooks.shape == lsq.codebooks.shape == (2, 256, DIM)
    assert opq.rotation.shape == (DIM, DIM)
    np.testing.assert_allclose(opq.rotation @ opq.rotation.T, np.eye(DIM), atol=1e-5)
    assert make_quantizer("rq", DIM, 12, sub_bits=4).code_bytes == 2  # 3 x 4 bits, packed


def test_pq_rq_lsq_train_and_encode_exactly_like_faiss():
    """The same faiss object trained directly with the same settings: same codebooks, codes."""
    pq = faiss.ProductQuantizer(DIM, 2, 8)
    pq.cp.seed = 3
    rq = faiss.ResidualQuantizer(DIM, 2, 8)
    rq.max_beam_size, rq.cp.seed, rq.cp.niter = 8, 3, 10
    lsq = faiss.LocalSearchQuantizer(DIM, 2, 8)
    lsq.random_seed, lsq.train_iters, lsq.nperts = 3, 5, 2
    for name, reference, vector in (("pq", pq, "centroids"), ("rq", rq, "codebooks"),
                                    ("lsq", lsq, "codebooks")):
        ours = fitted_quantizer(name, seed=3)
        reference.train(TRAIN)
        np.testing.assert_array_equal(
            ours.codebooks.ravel(), faiss.vector_to_array(getattr(reference, vector)))
        np.testing.assert_array_equal(ours.encode(TEST), reference.compute_codes(TEST))
        np.testing.assert_array_equal(ours.decode(ours.encode(TEST)),
                                      reference.decode(reference.compute_codes(TEST)))


def test_all_codes_equal_a_faiss_index_built_from_the_trained_state(fitted):
    codebooks = {name: q.codebooks for name, q in fitted.items()}
    index_pq = faiss.IndexPQ(DIM, 2, 8)
    faiss.copy_array_to_vector(codebooks["pq"].ravel(), index_pq.pq.centroids)
    index_pq.is_trained = True

    opq_pq = faiss.IndexPQ(DIM, 2, 8)
    faiss.copy_array_to_vector(codebooks["opq"].ravel(), opq_pq.pq.centroids)
    opq_pq.is_trained = True
    rotation = faiss.LinearTransform(DIM, DIM)
    faiss.copy_array_to_vector(fitted["opq"].rotation.ravel(), rotation.A)
    rotation.is_trained = True
    rotation.is_orthonormal = True
    index_opq = faiss.IndexPreTransform(rotation, opq_pq)

    index_rq = faiss.IndexResidualQuantizer(DIM, 2, 8)
    faiss.copy_array_to_vector(codebooks["rq"].ravel(), index_rq.rq.codebooks)
    index_rq.rq.max_beam_size = 8
    index_rq.rq.is_trained = index_rq.is_trained = True

    index_lsq = faiss.IndexLocalSearchQuantizer(DIM, 2, 8)
    faiss.copy_array_to_vector(codebooks["lsq"].ravel(), index_lsq.lsq.codebooks)
    index_lsq.lsq.nperts, index_lsq.lsq.random_seed = 2, 0
    index_lsq.lsq.is_trained = index_lsq.is_trained = True

    for name, index in (("pq", index_pq), ("opq", index_opq), ("rq", index_rq), ("lsq", index_lsq)):
        codes = fitted[name].encode(TEST)
        np.testing.assert_array_equal(codes, index.sa_encode(TEST), err_msg=name)
        np.testing.assert_allclose(fitted[name].decode(codes), index.sa_decode(codes), atol=1e-6)


def test_pq_codes_are_the_nearest_subcodewords(fitted):
    pq = fitted["pq"]
    indices = faiss.unpack_bitstrings(pq.encode(TEST), 2, 8)
    sub_vectors = TEST.reshape(len(TEST), 2, 8)
    distances = ((sub_vectors[:, :, None] - pq.codebooks[None]) ** 2).sum(-1)  # (n, M, K)
    np.testing.assert_array_equal(indices, distances.argmin(-1))


# ----------------------------------------------------------------------------- ADC


@pytest.mark.parametrize("sub_bits", [8, 4])
@pytest.mark.parametrize("name", NAMES)
def test_adc_distances_equal_brute_force_to_the_decoded_database(fitted, name, sub_bits):
    q = fitted[name] if sub_bits == 8 else fitted_quantizer(name, sub_bits=sub_bits)
    codes = q.encode(TEST)
    queries = TRAIN[:37]
    tables = q.adc_tables(queries)
    assert tables.shape == (37, q.n_codebooks, q.codebook_size) and tables.dtype == np.float32
    reference = brute_force(queries, q.decode(codes))
    distances = AdcSearch(q, codes).distances(queries)
    assert distances.shape == (37, len(TEST)) and distances.dtype == np.float32
    np.testing.assert_allclose(distances, reference, rtol=1e-4, atol=1e-4 * reference.mean())


def test_adc_search_is_prepared_once_and_serves_every_query_block(fitted):
    rq = fitted["rq"]
    codes = rq.encode(TEST)
    search = AdcSearch(rq, codes)
    assert len(search) == len(TEST) and search.bags.shape == (len(TEST), rq.n_codebooks)
    np.testing.assert_allclose(search.norms.numpy(), (rq.decode(codes) ** 2).sum(1), rtol=1e-5)
    for queries in (TRAIN[:5], TRAIN[5:9]):
        reference = brute_force(queries, rq.decode(codes))
        np.testing.assert_allclose(search.distances(queries), reference, rtol=1e-4,
                                   atol=1e-4 * reference.mean())


def test_flat_search_is_exact_on_float_codes():
    identity = Identity(DIM)
    codes = identity.encode(TEST)
    assert codes.shape == (len(TEST), 4 * DIM) and codes.dtype == np.uint8
    search = make_search(identity, codes)
    assert isinstance(search, FlatSearch)
    reference = brute_force(TRAIN[:6], TEST)
    np.testing.assert_allclose(search.distances(TRAIN[:6]), reference, rtol=1e-4,
                               atol=1e-4 * reference.mean())


def test_adc_over_many_blocks_of_the_database(fitted):
    """More items than one embedding_bag block (ADC_BLOCK = 16384)."""
    pq = fitted["pq"]
    codes = np.random.default_rng(0).integers(0, 256, (40000, 2), dtype=np.uint8)
    queries = TEST[:3]
    reference = brute_force(queries, pq.decode(codes))
    np.testing.assert_allclose(AdcSearch(pq, codes).distances(queries), reference, rtol=1e-4,
                               atol=1e-4 * reference.mean())


# ----------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trips_bit_exactly(fitted, name, tmp_path):
    q = fitted[name]
    with h5py.File(tmp_path / "q.h5", "w") as handle:
        save_quantizer(q, handle.create_group("quantizer"))
    with h5py.File(tmp_path / "q.h5", "r") as handle:
        group = handle["quantizer"]
        assert group.attrs["name"] == name and group["codebooks"].dtype == np.float32
        loaded = load_quantizer(group)
    assert type(loaded) is type(q) and loaded.options == q.options and loaded.is_fitted
    np.testing.assert_array_equal(loaded.codebooks, q.codebooks)
    if name == "opq":
        np.testing.assert_array_equal(loaded.rotation, q.rotation)
    codes = q.encode(TEST)
    np.testing.assert_array_equal(loaded.encode(TEST), codes)
    np.testing.assert_array_equal(loaded.decode(codes), q.decode(codes))
    np.testing.assert_array_equal(AdcSearch(loaded, codes).distances(TEST[:4]),
                                  AdcSearch(q, codes).distances(TEST[:4]))


# ----------------------------------------------------------------------------- assign


def snap_distances(q, z: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    return ((q.to_snap_space(z)[:, :, None] - candidates) ** 2).sum(-1)  # (b, G, k)


@pytest.mark.parametrize("name", NAMES)
def test_assign_reconstruction_is_the_encoded_vector_and_candidates_are_sorted(fitted, name):
    q = fitted[name]
    z = torch.from_numpy(TEST[:64])
    assignment = q.assign(z, k=5)
    assert isinstance(assignment, Assignment)
    groups = 1 if name in ("rq", "lsq") else 2
    assert assignment.candidates.shape == (64, groups, 5, DIM // groups)
    assert assignment.reconstruction.shape == (64, DIM)
    assert not assignment.reconstruction.requires_grad
    np.testing.assert_allclose(assignment.reconstruction.numpy(), q.decode(q.encode(TEST[:64])),
                               atol=1e-5)
    distances = snap_distances(q, z, assignment.candidates)
    assert (distances.diff(dim=-1) >= -1e-5).all()
    np.testing.assert_allclose(q.from_snap_space(q.to_snap_space(z)).numpy(), TEST[:64], atol=1e-5)
    if name != "lsq":  # the encoded reconstruction is the nearest candidate
        np.testing.assert_allclose(q.from_snap_space(assignment.candidates[:, :, 0]).numpy(),
                                   assignment.reconstruction.numpy(), atol=1e-5)


def test_pq_candidates_are_the_k_nearest_subcodewords(fitted):
    pq = fitted["pq"]
    z = torch.from_numpy(TEST[:50])
    candidates = pq.assign(z, k=4).candidates  # (50, 2, 4, 8)
    codebooks = torch.from_numpy(pq.codebooks)
    distances = ((pq.to_snap_space(z)[:, :, None] - codebooks[None]) ** 2).sum(-1)  # (b, M, K)
    expected = codebooks[torch.arange(2)[:, None], distances.argsort(-1)[..., :4]]
    torch.testing.assert_close(candidates, expected)


def test_opq_snap_space_is_the_rotated_space(fitted):
    opq = fitted["opq"]
    z = torch.from_numpy(TEST[:8])
    rotated = TEST[:8] @ opq.rotation.T
    np.testing.assert_allclose(opq.to_snap_space(z).numpy(), rotated.reshape(8, 2, 8), atol=1e-5)


def test_rq_candidates_are_faiss_beam_search(fitted):
    rq = fitted["rq"]
    z = TEST[:40]
    codes = np.empty((40, 8, 2), dtype=np.int32)
    residuals = np.empty((40, 8, DIM), dtype=np.float32)
    distances = np.empty((40, 8), dtype=np.float32)
    rq._faiss.refine_beam(40, 1, faiss.swig_ptr(z), 8, faiss.swig_ptr(codes),
                          faiss.swig_ptr(residuals), faiss.swig_ptr(distances))
    candidates = rq.assign(torch.from_numpy(z), k=8).candidates[:, 0].numpy()
    np.testing.assert_allclose(candidates, z[:, None] - residuals, atol=1e-5)
    # wider than the encoder's beam: candidates from a wider search, reconstruction still encode's
    wide = rq.assign(torch.from_numpy(z), k=16)
    np.testing.assert_allclose(wide.reconstruction.numpy(), rq.decode(rq.encode(z)), atol=1e-6)
    assert wide.candidates.shape == (40, 1, 16, DIM)
    assert (snap_distances(rq, torch.from_numpy(z), wide.candidates).diff(dim=-1) >= -1e-5).all()


def test_lsq_candidates_are_the_reconstruction_and_single_codebook_changes(fitted):
    lsq = fitted["lsq"]
    z = torch.from_numpy(TEST[:30])
    assignment = lsq.assign(z, k=6)
    codebooks = lsq.codebooks
    indices = faiss.unpack_bitstrings(lsq.encode(TEST[:30]), 2, 8)
    reconstruction = assignment.reconstruction.numpy()
    # the whole neighbourhood, by brute force: the reconstruction and every one-codeword change
    neighbourhood = [reconstruction[:, None]]
    for m in range(2):
        without_m = reconstruction - codebooks[m, indices[:, m]]
        changed = without_m[:, None] + codebooks[m][None]  # (b, K, dim)
        changed[np.arange(30), indices[:, m]] = np.nan  # the reconstruction itself
        neighbourhood.append(changed)
    neighbourhood = np.concatenate(neighbourhood, axis=1)
    distances = np.nan_to_num(((TEST[:30, None] - neighbourhood) ** 2).sum(-1), nan=np.inf)
    expected = np.sort(distances, axis=1)[:, :6]
    got = snap_distances(lsq, z, assignment.candidates)[:, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    own = ((TEST[:30] - reconstruction) ** 2).sum(-1)
    assert (got[:, 0] <= own + 1e-6).all()


# ----------------------------------------------------------------------------- quality


def test_quantization_error_ranking_lsq_rq_opq_pq():
    """d=32, 16 bits (2 x 256 codewords), 2000 anisotropic Gaussian vectors under a rotation."""
    x = correlated(2000, dim=32)
    options = {"pq": {}, "opq": {}, "rq": {}, "lsq": {"train_iters": 15}}
    errors = {name: make_quantizer(name, 32, 16, **options[name]).fit(x).quantization_error(x)
              for name in NAMES}
    assert errors["lsq"] < errors["rq"] < errors["opq"] < errors["pq"], errors
    # measured (one faiss thread): pq 0.685, opq 0.428, rq 0.399, lsq 0.338
    assert errors["lsq"] < 0.9 * errors["rq"] and errors["opq"] < 0.7 * errors["pq"], errors


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_codes_and_another_seed_other_codebooks(fitted, name):
    again = fitted_quantizer(name)
    np.testing.assert_array_equal(again.codebooks, fitted[name].codebooks)
    np.testing.assert_array_equal(again.encode(TEST), fitted[name].encode(TEST))
    assert not np.array_equal(fitted_quantizer(name, seed=1).codebooks, fitted[name].codebooks)


@pytest.mark.parametrize("name", NAMES)
def test_warm_start_refit_follows_drifting_data(name):
    q = fitted_quantizer(name)
    drifted = TRAIN * 1.1 + 0.05 * correlated(len(TRAIN), seed=7)
    stale = q.quantization_error(drifted)
    q.fit(drifted, warm_start=True)
    warm = q.quantization_error(drifted)
    fresh = fitted_quantizer(name).fit(drifted).quantization_error(drifted)
    assert warm < stale and warm < 1.1 * fresh, (stale, warm, fresh)


def test_warm_start_on_an_unfitted_quantizer_is_a_plain_fit(fitted):
    q = make_quantizer("pq", DIM, BITS).fit(TRAIN, warm_start=True)
    np.testing.assert_array_equal(q.codebooks, fitted["pq"].codebooks)


def test_rq_warm_start_with_fewer_than_m_k_vectors_refits_from_scratch():
    few = TRAIN[:300]  # >= K = 256 but < M * K = 512: faiss cannot refine the codebooks
    warm = fitted_quantizer("rq").fit(few, warm_start=True)
    fresh = make_quantizer("rq", DIM, BITS).fit(few)
    np.testing.assert_array_equal(warm.codebooks, fresh.codebooks)


def test_restart_seeds_are_the_seed_then_distinct_31_bit_seeds():
    seeds = {(seed, restart): restart_seed(seed, restart) for seed in range(20)
             for restart in range(8)}
    assert all(seeds[seed, 0] == seed for seed in range(20))
    assert len(set(seeds.values())) == len(seeds)  # seed + restart would collide
    assert all(0 <= value < 2**31 for value in seeds.values())
    assert restart_seed(5, 3) == restart_seed(5, 3)


@pytest.mark.parametrize("name", NAMES)
def test_the_final_fit_keeps_the_cold_restart_of_lowest_error(name, monkeypatch):
    """The final fit against a plain loop: FINAL_RESTARTS cold fits with final_options and the
    restart seeds, the one of lowest training error loaded, the quantizer's seed and options
    kept; earlier (warm) fits of the quantizer change nothing."""
    cls = QUANTIZERS[name]
    monkeypatch.setattr(cls, "FINAL_RESTARTS", 3)
    final = {"opq": {"opq_iters": 6}, "lsq": {"train_iters": 4}}.get(name, {"kmeans_iters": 7})
    monkeypatch.setattr(cls, "final_options", lambda self: final)
    x = TRAIN[:600]
    options = {**cls.OPTIONS, **FAST[name], **final}
    fits = [make_quantizer(name, DIM, 8, 4, restart_seed(2, restart), **options).fit(x)
            for restart in range(3)]
    errors = [fit.quantization_error(x) for fit in fits]
    assert len(set(errors)) > 1  # the restarts differ, so the choice is checked
    best = fits[int(np.argmin(errors))]
    fresh = make_quantizer(name, DIM, 8, 4, 2, **FAST[name]).fit_final(x)
    used = make_quantizer(name, DIM, 8, 4, 2, **FAST[name]).fit(TEST).fit(x, warm_start=True)
    for final in (fresh, used.fit_final(x)):
        for key, array in best.state().items():
            np.testing.assert_array_equal(final.state()[key], array)
        assert final.seed == 2 and final.options == {**cls.OPTIONS, **FAST[name]}
        assert final.quantization_error(x) == pytest.approx(min(errors), rel=1e-6)


def test_pq_kmeans_redo_keeps_the_best_run_of_each_sub_space():
    """kmeans_redo (faiss's nredo): each sub-space's codebook is the best of the redo runs, so
    the error is at most a single run's, and it is not one of the runs' whole codebooks."""
    one = make_quantizer("pq", DIM, 8, 4).fit(TRAIN)
    redo = make_quantizer("pq", DIM, 8, 4, kmeans_redo=8).fit(TRAIN)
    assert redo.quantization_error(TRAIN) < one.quantization_error(TRAIN)
    for sub in range(2):
        part = np.ascontiguousarray(TRAIN[:, 8 * sub:8 * sub + 8])
        errors = []
        for codebook in (one.codebooks[sub], redo.codebooks[sub]):
            index = faiss.IndexFlatL2(8)
            index.add(codebook)
            errors.append(index.search(part, 1)[0].mean())
        assert errors[1] <= errors[0] * (1 + 1e-6)


def test_quantization_error_is_the_mean_squared_residual(fitted):
    q = fitted["opq"]
    expected = ((TEST.astype(np.float64) - q.decode(q.encode(TEST))) ** 2).sum(1).mean()
    assert q.quantization_error(TEST) == pytest.approx(expected)


# ----------------------------------------------------------------------------- user errors


@pytest.mark.parametrize(("name", "dim", "bits", "sub_bits", "options", "message"), [
    ("pq", 32, 30, 8, {}, "--bits 30 is not a multiple of --sub-bits 8"),
    ("pq", 32, 0, 8, {}, "--bits 0 must be positive"),
    ("rq", 32, 32, 0, {}, "--sub-bits 0 is out of range (1 to 16)"),
    ("pq", 30, 32, 8, {}, "the pq quantizer cuts 30-d vectors into 4 sub-vectors "
                          "(--bits 32 / --sub-bits 8): 30 is not a multiple of 4"),
    ("opq", 30, 32, 8, {}, "the opq quantizer cuts 30-d vectors into 4 sub-vectors"),
    ("lsq", 32, 12, 4, {}, "the lsq quantizer needs --bits a multiple of 8, got 12"),
    ("rq", 32, 32, 8, {"beam": 4}, "unknown option 'beam' for the rq quantizer (known: beam_size"),
    ("rq", 32, 32, 8, {"beam_size": 0}, "option beam_size=0 of the rq quantizer must be a positive "
                                         "integer"),
    ("xq", 32, 32, 8, {}, "unknown quantizer 'xq'; known: lsq, opq, pq, rq"),
])
def test_bad_configurations(name, dim, bits, sub_bits, options, message):
    with pytest.raises(GslbenchError, match="^" + re.escape(message)):
        make_quantizer(name, dim, bits, sub_bits, **options)


def test_too_few_training_vectors():
    message = "100 training vectors are fewer than the 256 codewords of each pq codebook"
    with pytest.raises(GslbenchError, match=message):
        make_quantizer("pq", DIM, BITS).fit(TRAIN[:100])


@pytest.mark.parametrize("name", NAMES)
def test_use_before_fit(name):
    q = make_quantizer(name, DIM, BITS)
    message = f"the {name} quantizer is not fitted: call fit\\(\\) first"
    for call in (lambda: q.encode(TEST), lambda: q.decode(np.zeros((1, 2), np.uint8)),
                 lambda: q.adc_tables(TEST), lambda: q.assign(torch.zeros(2, DIM)),
                 lambda: q.state(), lambda: q.codebooks):
        with pytest.raises(GslbenchError, match=message):
            call()


def test_wrong_dimension_everywhere(fitted):
    pq = fitted["pq"]
    wrong = np.zeros((3, DIM + 1), np.float32)
    codes = pq.encode(TEST[:3])
    for what, call in (("training vectors", lambda: make_quantizer("pq", DIM, BITS).fit(wrong)),
                       ("vectors", lambda: pq.encode(wrong)),
                       ("vectors", lambda: pq.encode(TEST[0])),
                       ("queries", lambda: pq.adc_tables(wrong)),
                       ("queries", lambda: AdcSearch(pq, codes).distances(wrong))):
        with pytest.raises(GslbenchError, match=f"^{what} of shape .* given to the pq quantizer, "
                                                f"expected \\(n, {DIM}\\)"):
            call()
    with pytest.raises(GslbenchError, match=r"representations of shape \(3, 17\) given to the pq"):
        pq.assign(torch.zeros(3, DIM + 1))
    with pytest.raises(GslbenchError, match=r"k = 300 candidates is out of range \(1 to 256\)"):
        pq.assign(torch.zeros(3, DIM), k=300)


def test_codes_of_the_wrong_width_or_type(fitted):
    rq = fitted["rq"]
    message = (r"codes of shape \(4, 3\) and dtype uint8 given to the rq quantizer, "
               r"expected \(n, 2\) uint8 for --bits 16")
    with pytest.raises(GslbenchError, match=message):
        rq.decode(np.zeros((4, 3), np.uint8))
    with pytest.raises(GslbenchError, match=message):
        AdcSearch(rq, np.zeros((4, 3), np.uint8))
    with pytest.raises(GslbenchError, match=r"dtype int64 given to the rq quantizer"):
        rq.decode(np.zeros((4, 2), np.int64))


def test_load_rejects_inconsistent_groups(fitted, tmp_path):
    with h5py.File(tmp_path / "q.h5", "w") as handle:
        save_quantizer(fitted["opq"], handle.create_group("ok"))
        save_quantizer(fitted["pq"], handle.create_group("sub_bits"))
        handle["sub_bits"].attrs["sub_bits"] = 4
        save_quantizer(fitted["opq"], handle.create_group("no_rotation"))
        del handle["no_rotation/rotation"]
        save_quantizer(fitted["lsq"], handle.create_group("no_seed"))
        del handle["no_seed"].attrs["seed"]
        save_quantizer(fitted["rq"], handle.create_group("bad_name"))
        handle["bad_name"].attrs["name"] = "xq"
    with h5py.File(tmp_path / "q.h5", "r") as handle:
        load_quantizer(handle["ok"])
        cases = (("sub_bits", r"/sub_bits/codebooks has shape \(2, 256, 8\), but its attributes "
                              r"\(pq, dim 16, bits 16, sub_bits 4\) need \(4, 16, 4\)"),
                 ("no_rotation", r"/no_rotation: no 'rotation' dataset"),
                 ("no_seed", r"/no_seed: no quantizer attribute 'seed'"),
                 ("bad_name", r"/bad_name: bad quantizer attributes \(unknown quantizer 'xq'"))
        for group, message in cases:
            with pytest.raises(GslbenchError, match=f"q.h5:{message}"):
                load_quantizer(handle[group])


@pytest.mark.parametrize("n_values, k", [(256, 8), (256, 1), (16, 8), (64, 4), (48, 5)])
def test_k_smallest_matches_a_full_sort(n_values, k):

    generator = torch.Generator().manual_seed(n_values + k)
    distances = torch.randn(64, 3, n_values, generator=generator)
    distances[:8] = torch.round(distances[:8] * 2)  # many ties
    expected = distances.sort(dim=-1, stable=True).indices[..., :k]  # ties: the lower index first
    assert torch.equal(k_smallest(distances, k), expected)


def test_k_smallest_of_non_finite_distances_is_a_clear_error():

    distances = torch.rand(4, 2, 256)
    distances[1, 0] = torch.nan
    with pytest.raises(GslbenchError, match="non-finite representations"):
        k_smallest(distances, 8)
