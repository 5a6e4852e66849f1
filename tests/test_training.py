"""The training loop, the methods and the similarity losses on small seeded data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from gslbench.config import RunConfig
from gslbench.data.featurefile import FeatureSet, Split, multi_hot
from gslbench.errors import GslbenchError
from gslbench.methods.loop import train
from gslbench.methods.losses import LOSSES, PairwiseCosineLoss
from gslbench.methods.model import embed
from gslbench.quantizers import make_quantizer


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    class_ids = rng.integers(0, 4, 600)
    x = (rng.normal(size=(4, 16))[class_ids] + rng.normal(size=(600, 16))).astype(np.float32)
    split = Split(x, multi_hot(class_ids, 4), np.arange(600))
    return FeatureSet("toy", "gauss", split, split, split, list("abcd"), 0, "")


BASE = RunConfig(dataset="toy", feature="gauss", bits=16, dim_out=16, hidden=32, epochs=6,
                 warmup_epochs=2, epochs_per_refit=2, batch_size=100)


def sim_losses(result):
    return [row["sim_loss"] for row in result.log]


def test_log_has_one_row_per_epoch_with_the_documented_columns(features):
    result = train(dataclasses.replace(BASE, method="gsl"), features, show_progress=False)
    assert [row["epoch"] for row in result.log] == list(range(1, 7))
    assert set(result.log[0]) == {"epoch", "sim_loss", "quant_mse", "quant_mse_refit", "seconds"}
    refits = [row["epoch"] for row in result.log if not np.isnan(row["quant_mse_refit"])]
    assert refits == [2, 4, 6]  # end of warm-up, every epochs_per_refit, last
    in_use = [row["epoch"] for row in result.log if not np.isnan(row["quant_mse"])]
    assert in_use == [4, 6]  # at a refit, under the codebooks of the one before
    assert all(row["quant_mse"] > row["quant_mse_refit"] > 0 for row in result.log[3::2])
    assert result.quantizer.is_fitted


@pytest.mark.parametrize("method", ["gsl", "qloss", "two-step"])
def test_the_final_codebooks_are_the_final_fit_of_the_final_representations(features, method):
    """Whatever the refits before it (warm-started for gsl and qloss), the saved quantizer is the
    final fit (`Quantizer.fit_final`) of the final network's training representations, and the
    last log row holds its error."""
    result = train(dataclasses.replace(BASE, method=method), features, show_progress=False)
    final = embed(result.model, features.train.features)
    fresh = make_quantizer("pq", 16, 16, seed=BASE.seed).fit_final(final)
    np.testing.assert_array_equal(result.quantizer.codebooks, fresh.codebooks)
    assert result.log[-1]["quant_mse_refit"] == fresh.quantization_error(final)


@pytest.mark.parametrize("quantizer", ["pq", "opq"])
def test_two_step_and_the_alpha_0_control_fit_one_network_alike(features, quantizer):
    """At alpha = 0 GSL trains two-step's (float's) network bit for bit, and its warm-started
    refits do not reach the saved codebooks: both runs save the same quantizer."""
    config = dataclasses.replace(BASE, quantizer=quantizer, epochs=4)
    two_step = train(dataclasses.replace(config, method="two-step"), features, show_progress=False)
    control = train(dataclasses.replace(config, method="gsl", gsl_alpha=0.0), features,
                    show_progress=False)
    for a, b in zip(two_step.model.state_dict().values(), control.model.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for key, array in two_step.quantizer.state().items():
        np.testing.assert_array_equal(control.quantizer.state()[key], array)


def test_two_step_trains_the_float_network(features):
    float_run = train(dataclasses.replace(BASE, method="float"), features, show_progress=False)
    two_step = train(dataclasses.replace(BASE, method="two-step"), features, show_progress=False)
    assert sim_losses(float_run) == sim_losses(two_step)
    assert float_run.quantizer is None


@pytest.mark.parametrize("method, knob", [("gsl", {"gsl_alpha": 0.0}), ("qloss", {"qloss_lambda": 0.0})])
def test_strategies_with_their_knob_at_zero_train_like_two_step(features, method, knob):
    two_step = train(dataclasses.replace(BASE, method="two-step"), features, show_progress=False)
    neutral = train(dataclasses.replace(BASE, method=method, **knob), features, show_progress=False)
    np.testing.assert_allclose(sim_losses(neutral), sim_losses(two_step), rtol=1e-6)
    active = train(dataclasses.replace(BASE, method=method), features, show_progress=False)
    assert sim_losses(active)[-1] != pytest.approx(sim_losses(two_step)[-1], rel=1e-6)


def test_same_seed_same_model(features):
    first = train(dataclasses.replace(BASE, method="gsl"), features, show_progress=False)
    again = train(dataclasses.replace(BASE, method="gsl"), features, show_progress=False)
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    np.testing.assert_array_equal(first.quantizer.codebooks, again.quantizer.codebooks)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_trains(features, loss):
    config = dataclasses.replace(BASE, method="gsl", loss=loss, epochs=4)
    result = train(config, features, show_progress=False)
    losses = sim_losses(result)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_pairwise_cosine_loss_is_zero_at_its_targets():
    labels = torch.tensor([[1, 0], [1, 0], [0, 1]])
    z = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-3.0, 0.0]])  # same class parallel, others opposite
    assert PairwiseCosineLoss(2, 2, 0.0)(z, labels).item() == pytest.approx(0.0)
    orthogonal = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # pairs (0,1): target 1, cos 0 -> 1; (0,2): target -1, cos 1 -> 4; (1,2): target -1, cos 0 -> 1
    assert PairwiseCosineLoss(2, 2, 0.0)(orthogonal, labels).item() == pytest.approx(6 / 3)


def test_unused_settings_do_not_split_runs():
    assert RunConfig(method="float", qloss_lambda=5.0, bits=64).run_id == RunConfig(method="float").run_id
    assert RunConfig(method="gsl", qloss_lambda=5.0).run_id == RunConfig(method="gsl").run_id
    assert RunConfig(method="gsl", gsl_alpha=0.5).run_id != RunConfig(method="gsl").run_id
    assert RunConfig(method="qloss", qloss_lambda=5.0).run_id != RunConfig(method="qloss").run_id


@pytest.mark.parametrize("options, message", [
    ({"method": "sgd"}, "unknown method"), ({"loss": "hinge"}, "unknown loss"),
    ({"bits": 12}, "--bits 12"), ({"gsl_alpha": 2.0}, "--gsl-alpha"),
    ({"warmup_epochs": 50}, "--warmup-epochs"),
])
def test_bad_configs_are_user_errors(options, message):
    with pytest.raises(GslbenchError, match=message):
        RunConfig(**options)


# --- the similarity losses against plain loops on a hand-made batch ---------------------------

BATCH = torch.tensor([[0.0, 0.0], [0.3, 0.4], [1.0, 0.0], [0.0, 2.0], [0.6, 0.8]])
BATCH_LABELS = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])


def _similar(i: int, j: int) -> bool:
    return bool((BATCH_LABELS[i] * BATCH_LABELS[j]).sum() > 0)


def _distance(i: int, j: int) -> float:
    return float(((BATCH[i] - BATCH[j]) ** 2).sum().sqrt())


def test_contrastive_loss_equals_a_plain_loop():
    margin, terms = 0.7, []
    for i in range(len(BATCH)):
        for j in range(len(BATCH)):
            if i != j:
                d = _distance(i, j)
                terms.append(d**2 if _similar(i, j) else max(0.0, margin - d) ** 2)
    ours = LOSSES["contrastive"](3, 2, margin)(BATCH, BATCH_LABELS).item()
    assert ours == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_batch_hard_triplet_loss_equals_a_plain_loop():
    margin, terms = 0.3, []
    for anchor in range(len(BATCH)):
        positives = [_distance(anchor, j) for j in range(len(BATCH)) if j != anchor and _similar(anchor, j)]
        negatives = [_distance(anchor, j) for j in range(len(BATCH)) if not _similar(anchor, j)]
        if positives and negatives:
            terms.append(max(0.0, max(positives) - min(negatives) + margin))
    assert len(terms) == 5  # every anchor has a positive and a negative in this batch
    ours = LOSSES["triplet"](3, 2, margin)(BATCH, BATCH_LABELS).item()
    assert ours == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_softmax_loss_equals_a_plain_loop_single_and_multi_label():
    loss = LOSSES["softmax"](3, 2, 0.0)
    weight, bias = loss.classifier.weight.detach(), loss.classifier.bias.detach()
    logits = [[float(BATCH[i] @ weight[c] + bias[c]) for c in range(3)] for i in range(len(BATCH))]
    single = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
    expected = np.mean([np.log(np.exp(row).sum()) - row[int(single[i].argmax())]
                        for i, row in enumerate(logits)])
    assert loss(BATCH, single).item() == pytest.approx(expected, rel=1e-6)

    def bce(x: float, y: int) -> float:  # binary cross-entropy with logits
        return -(y * np.log(1 / (1 + np.exp(-x))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-x))))

    expected = np.mean([bce(logits[i][c], int(BATCH_LABELS[i][c]))
                        for i in range(len(BATCH)) for c in range(3)])
    assert loss(BATCH, BATCH_LABELS).item() == pytest.approx(expected, rel=1e-5)


def test_pairwise_loss_equals_a_plain_loop():
    terms = []
    for i in range(1, len(BATCH)):  # row 0 is the zero vector: skip it, its cosine is 0 by convention
        for j in range(1, len(BATCH)):
            if i != j:
                cosine = float(BATCH[i] @ BATCH[j]) / (BATCH[i].norm() * BATCH[j].norm()).item()
                terms.append(((1.0 if _similar(i, j) else -1.0) - cosine) ** 2)
    ours = LOSSES["pairwise"](3, 2, 0.0)(BATCH[1:], BATCH_LABELS[1:]).item()
    assert ours == pytest.approx(sum(terms) / len(terms), rel=1e-6)


# --- the trainable-quantizer baselines (ste, soft, gumbel) and GSL's codeword rule -------------

NEW_METHODS = [("ste", {}), ("soft", {}), ("gumbel", {}), ("gsl", {"gsl_select": "nearest"})]


@pytest.fixture(scope="module")
def two_step_losses(features):
    return sim_losses(train(dataclasses.replace(BASE, method="two-step"), features, show_progress=False))


@pytest.mark.parametrize("method, knobs", NEW_METHODS)
def test_new_methods_train_after_a_plain_warm_up(features, two_step_losses, method, knobs):
    config = dataclasses.replace(BASE, method=method, **knobs)
    result = train(config, features, show_progress=False)
    losses = sim_losses(result)
    assert np.isfinite(losses).all() and result.quantizer.is_fitted
    np.testing.assert_allclose(losses[:2], two_step_losses[:2], rtol=1e-6)  # warm-up: plain training
    assert losses[2:] != pytest.approx(two_step_losses[2:], rel=1e-6)


def test_gumbel_same_seed_same_model(features):
    config = dataclasses.replace(BASE, method="gumbel", gumbel_tau=0.1)
    first, again = (train(config, features, show_progress=False) for _ in range(2))
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("options, message", [
    ({"method": "ste", "ste_beta": -0.1}, "--ste-beta"), ({"method": "soft", "soft_k": 0}, "--soft-k"),
    ({"method": "soft", "soft_tau": 0.0}, "--soft-tau"), ({"method": "gumbel", "gumbel_k": 0}, "--gumbel-k"),
    ({"method": "gumbel", "gumbel_tau": -1.0}, "--gumbel-tau"),
    ({"method": "gsl", "gsl_select": "far"}, "--gsl-select"),
])
def test_bad_knobs_of_the_new_methods_are_user_errors(options, message):
    with pytest.raises(GslbenchError, match=message):
        RunConfig(**options)


def test_config_json_records_the_cpu_and_the_kernels_that_trained_the_run(digits_runs):
    """Training gives other bits on another kind of CPU (docs/guide/grids.md): the run says which
    it was trained on."""
    root, runs = digits_runs
    record = json.loads((Path(runs["pq"]) / "config.json").read_text())
    assert record["cpu"]["torch"] == torch.backends.cpu.get_cpu_capability()
    assert record["cpu"]["faiss"] == faiss.get_compile_options().strip()
    assert record["cpu"]["model"]
