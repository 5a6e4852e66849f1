"""The `pca` method: its projection against numpy's own PCA on hand-made data, its network, and a
run through train, encode (both fits), evaluate and report with no epoch trained."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from gslbench.cli import cli
from gslbench.config import RunConfig
from gslbench.errors import GslbenchError
from gslbench.layout import RunDir
from gslbench.methods.loop import train
from gslbench.methods.model import embed
from gslbench.methods.pca import PCAMethod, pca_projection
from gslbench.quantizers import make_quantizer
from gslbench.testing import check_method, small_features

pytestmark = pytest.mark.usefixtures("one_thread")


def anisotropic(n: int, d: int, seed: int = 0) -> np.ndarray:
    """(n, d) float32: variances 1, 1/2, ..., 1/d under a random rotation, shifted by a mean."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.standard_normal((d, d)))[0]
    scaled = rng.standard_normal((n, d)) / np.sqrt(np.arange(1, d + 1))
    return (scaled @ rotation.T + rng.normal(size=d) * 3).astype(np.float32)


def test_the_projection_is_numpys_covariance_eigenvectors():
    """Against an independent route: the eigenvectors of numpy's covariance matrix, by decreasing
    eigenvalue, each signed so that its largest entry is positive."""
    x = anisotropic(500, 10)
    mean, components = pca_projection(x, 4)
    values, vectors = np.linalg.eigh(np.cov(x.astype(np.float64), rowvar=False))
    expected = vectors[:, np.argsort(values)[::-1][:4]].T
    expected *= np.sign(expected[np.arange(4), np.abs(expected).argmax(1)])[:, None]
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(components, expected, atol=1e-5)
    assert mean.dtype == components.dtype == np.float32 and components.shape == (4, 10)


def test_the_projection_of_points_on_known_axes():
    """Hand-made: points spread 3, 2 and 1 along the axes z, x and y around (1, 1, 1)."""
    spread = np.array([[0, 0, 3], [0, 0, -3], [2, 0, 0], [-2, 0, 0], [0, 1, 0], [0, -1, 0]])
    mean, components = pca_projection((spread + 1).astype(np.float32), 2)
    np.testing.assert_allclose(mean, [1, 1, 1], atol=1e-7)
    np.testing.assert_allclose(components, [[0, 0, 1], [1, 0, 0]], atol=1e-7)


def test_features_no_wider_than_dim_out_are_kept_as_they_are_padded_with_zeros():
    x = anisotropic(50, 3)
    mean, components = pca_projection(x, 5)
    np.testing.assert_array_equal(mean, np.zeros(3))
    np.testing.assert_array_equal(components, np.eye(5, 3))
    np.testing.assert_array_equal(pca_projection(x, 3)[1], np.eye(3))


def config(**settings) -> RunConfig:
    return RunConfig(method="pca", dataset="toy", feature="gauss", bits=8, sub_bits=4,
                     **{"dim_out": 8, "hidden": 32, **settings})


@pytest.mark.parametrize("d", [12, 8, 5])
def test_the_network_embeds_the_normalised_projection(d):
    """Wider features: the L2-normalised PCA projection (float rounding apart); no wider: the
    features themselves padded with zeros and normalised, bit for bit (F.normalize, as every
    run's head)."""
    x, other = anisotropic(300, d), anisotropic(40, d, seed=1)
    model = PCAMethod.network(config(), x)
    mean, components = pca_projection(x, 8)
    expected = F.normalize(torch.from_numpy((other - mean) @ components.T), dim=1).numpy()
    if d > 8:
        np.testing.assert_allclose(embed(model, other), expected, atol=1e-6)
    else:
        np.testing.assert_array_equal(embed(model, other), expected)


def test_a_hidden_layer_too_narrow_for_the_projection_is_a_one_line_error():
    with pytest.raises(GslbenchError, match="--hidden 15: pca .* --hidden 16 or more"):
        PCAMethod.network(config(hidden=15), anisotropic(100, 12))


def test_pca_trains_nothing_and_ignores_the_training_settings():
    """No epoch and no checkpoint: one log row (epoch 0) with the final fit's error; the
    training settings are reset, so they do not split its runs."""
    features = small_features()
    result = train(config(), features, show_progress=False)
    assert result.epochs_trained == 0 and result.started_from is None
    assert [row["epoch"] for row in result.log] == [0]
    representations = embed(result.model, features.train.features)
    fresh = make_quantizer("pq", 8, 8, 4).fit_final(representations)
    np.testing.assert_array_equal(result.quantizer.codebooks, fresh.codebooks)
    assert result.log[0]["quant_mse_refit"] == fresh.quantization_error(representations)
    assert config(epochs=3, lr=0.1, loss="triplet").run_id == config().run_id
    assert config(hidden=64).run_id != config().run_id  # it holds the projection


def test_pca_passes_the_method_checks():
    """gslbench.testing's checks: training reproducible (the same codes twice) applies as for
    any method; the representation, penalty and gradient checks pass on the base's identity and
    zero, which pca never uses (it takes no step)."""
    check_method(PCAMethod)


def invoke(root, *args) -> str:
    base = ["--data-dir", str(root / "data"), "--results-dir", str(root / "results"), "-q"]
    result = CliRunner().invoke(cli, [*base, *args])
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_a_pca_run_flows_through_encode_evaluate_and_report(tmp_path):
    invoke(tmp_path, "download", "digits")
    invoke(tmp_path, "features", "digits")
    options = ["-d", "digits", "--quantizer", "pq", "--bits", "16", "--sub-bits", "4",
               "--dim-out", "16", "--hidden", "32"]
    run = RunDir(Path(invoke(tmp_path, "train", "--method", "pca", *options, "--epochs", "3")))
    record = json.loads(run.config.read_text())
    assert record["epochs_trained"] == 0 and record["started_from"] is None
    assert not (tmp_path / "results" / "checkpoints").exists() or not any(
        (tmp_path / "results" / "checkpoints").rglob("*.pt"))
    assert invoke(tmp_path, "train", "--method", "pca", *options, "--epochs", "9") == str(run.path)
    log = pd.read_csv(run.train_log)
    assert list(log.epoch) == [0] and log.quant_mse_refit[0] > 0
    for codebooks in ("train", "database"):
        invoke(tmp_path, "encode", run.run_id, "--codebooks", codebooks)
        invoke(tmp_path, "evaluate", run.run_id, "--codebooks", codebooks)
        metrics = json.loads(run.metrics_file(codebooks=codebooks).read_text())
        assert 0 < metrics["map"] <= 1
    with h5py.File(run.codes_file("train")) as codes:
        assert codes.attrs["method"] == "pca"
    invoke(tmp_path, "report")
    results = pd.read_csv(tmp_path / "results" / "report" / "results.csv")
    assert set(results.method) == {"pca"} and len(results) == 2  # one row per fit
