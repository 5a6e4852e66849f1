"""Feature extraction: pixels, EfficientNet-Lite0 (the packaged ImageNet weights), real data."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from datafakes import fashion_files, fashion_source

from gslbench import data as datasets
from gslbench.data import backbones, fashion_mnist, fetch
from gslbench.data.featurefile import read_feature_file, write_feature_file
from gslbench.data.features import build_features, features_digest
from gslbench.errors import GslbenchError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small batches on a shared 2-core machine: OpenMP threads that wait on each other cost
    more than they bring (100x slower under load), so run these tests on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pixel_features_are_flat_and_scaled():
    images = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    features = backbones.extract_features(images, "pixels")
    assert features.shape == (2, 48) and features.dtype == np.float32
    assert features[1, -1] == pytest.approx(95 / 255)
    digits = backbones.pixel_features(np.full((3, 8, 8), 16.0), pixel_max=16.0)
    assert digits.shape == (3, 64) and (digits == 1.0).all()


def test_preprocess_grayscale_resize_and_normalisation():
    batch = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    x = backbones.preprocess(batch, 64, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    torch.testing.assert_close(x[:, 0], torch.ones(2, 64, 64))
    torch.testing.assert_close(x[:, 1], torch.full((2, 64, 64), 3.0))
    torch.testing.assert_close(x[:, 2], torch.ones(2, 64, 64))
    shrunk = backbones.preprocess(torch.zeros(1, 3, 32, 32), 16)
    assert shrunk.shape == (1, 3, 16, 16)


@pytest.mark.parametrize(("side", "size"), [(28, 64), (32, 64), (28, 29), (28, 16), (64, 24),
                                            (100, 17)])
def test_resize_is_torchs_bilinear_resize(side, size):
    """Enlarging: torch's bilinear interpolate; shrinking: with antialias (float64 on both)."""
    images = np.random.default_rng(side + size).integers(0, 256, (2, 3, side, side)).astype(float)
    resized = backbones.resize_bilinear(images, size)
    torchs = torch.nn.functional.interpolate(torch.from_numpy(images), size=(size, size),
                                             mode="bilinear", align_corners=False,
                                             antialias=size < side).numpy()
    assert resized.shape == (2, 3, size, size)
    np.testing.assert_allclose(resized, torchs, rtol=0, atol=1e-9)


def test_average_pool_is_the_spatial_mean():
    activations = torch.from_numpy(np.random.default_rng(1).random((4, 6, 2, 3), np.float32))
    pooled = backbones.average_pool(activations)
    assert pooled.shape == (4, 6) and pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, activations.numpy().mean(axis=(2, 3)), rtol=1e-6)


_INPUT_BITS = """
import hashlib, numpy as np, torch
from gslbench.data import backbones
rng = np.random.default_rng(0)
images = torch.from_numpy(rng.integers(0, 256, (8, 1, 28, 28), dtype=np.uint8))
x = backbones.preprocess(images, 64, 255.0, backbones.INCEPTION_MEAN, backbones.INCEPTION_STD)
pooled = backbones.average_pool(torch.from_numpy(rng.random((8, 1280, 2, 2), np.float32) * 6))
print(torch.backends.cpu.get_cpu_capability(), hashlib.sha256(x.numpy().tobytes()
      + pooled.tobytes()).hexdigest())
"""


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
                    reason="needs an x86 CPU with AVX2 to compare two kernel sets")
@pytest.mark.slow
def test_network_input_and_pooling_have_the_same_bits_under_other_kernels():
    """torch's interpolate gives other bits under its default and AVX2 kernels (measured on
    Fashion-MNIST: up to 3.6e-7 apart); the float64 resize and pooling do not."""
    found = {}
    for kernels in ("default", "avx2"):
        env = {**os.environ, "ATEN_CPU_CAPABILITY": kernels,
               "PYTHONPATH": os.pathsep.join(sys.path)}
        result = subprocess.run([sys.executable, "-c", _INPUT_BITS], env=env, check=True,
                                capture_output=True, text=True)
        capability, digest = result.stdout.split()
        found[capability] = digest
    assert set(found) == {"DEFAULT", "AVX2"} and len(set(found.values())) == 1


def test_kernels_are_capped_inside_the_block_and_the_environment_restored(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setattr(backbones.platform, "machine", lambda: "x86_64")
    with backbones.capped_cpu_kernels():
        assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"
        assert os.environ["ATEN_CPU_CAPABILITY"] == "default"  # the user's own choice kept
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ
    assert os.environ["ATEN_CPU_CAPABILITY"] == "default"
    monkeypatch.setattr(backbones.platform, "machine", lambda: "arm64")
    with backbones.capped_cpu_kernels():
        assert "ONEDNN_MAX_CPU_ISA" not in os.environ  # no x86 kernels to cap


def test_bad_image_shapes_and_sizes_are_user_errors():
    with pytest.raises(GslbenchError, match=r"got shape \(2, 5, 8, 8\)"):
        backbones.as_nchw(np.zeros((2, 5, 8, 8)))
    with pytest.raises(GslbenchError, match="too small"):
        backbones.extract_features(np.zeros((1, 8, 8)), image_size=8)
    with pytest.raises(GslbenchError, match="unknown backbone 'vgg'"):
        backbones.get_backbone("vgg")


def test_weights_are_checked_before_loading(monkeypatch):
    spec = backbones.BACKBONES["efficientnet-lite0"]
    monkeypatch.setitem(backbones.BACKBONES, "efficientnet-lite0",
                        dataclasses.replace(spec, weights_sha256="0" * 64))
    with pytest.raises(GslbenchError, match="does not match efficientnet-lite0's weights"):
        backbones.load_model("efficientnet-lite0", 32)


def test_efficientnet_lite0_features_are_pooled_1280d_and_batch_independent():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    model = backbones.load_model("efficientnet-lite0", 32)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    whole = backbones.extract_features(images, image_size=32, batch_size=5, model=model)
    pieces = backbones.extract_features(images, image_size=32, batch_size=2, model=model)
    assert whole.shape == (5, 1280) and whole.dtype == np.float32
    assert np.isfinite(whole).all() and (whole >= 0).all()  # pooled ReLU6 activations
    assert (whole <= 6).all() and whole.std(axis=0).max() > 0
    np.testing.assert_allclose(whole, pieces, rtol=1e-4, atol=1e-5)
    rgb = backbones.extract_features(np.repeat(images[:, None], 3, axis=1), image_size=32,
                                     model=model)
    np.testing.assert_allclose(rgb, whole, rtol=1e-5, atol=1e-6)  # gray == replicated RGB


def test_build_features_with_efficientnet_records_provenance(tmp_path, monkeypatch):
    files = fashion_files(train_per_class=3, test_per_class=1)
    (tmp_path / "src").mkdir()
    for name, data in files.items():
        (tmp_path / "src" / name).write_bytes(data)
    monkeypatch.setattr(fashion_mnist, "SOURCE",
                        fashion_source(files, ((tmp_path / "src").as_uri() + "/",)))
    dataset = datasets.DATASETS["fashion-mnist"]
    monkeypatch.setitem(datasets.DATASETS, "fashion-mnist", dataclasses.replace(
        dataset, protocol=dataclasses.replace(dataset.protocol, query_per_class=1,
                                              train_per_class=2)))  # 1 validation query
    datasets.download("fashion-mnist", tmp_path / "data")
    path = build_features("fashion-mnist", tmp_path / "data", image_size=32,
                                   batch_size=16)
    assert path.name == "efficientnet-lite0-32.h5"
    features = read_feature_file(path)
    assert features.dim == 1280 and features.feature == "efficientnet-lite0-32"
    assert len(features.database.indices) == 40 - 30
    with h5py.File(path) as handle:
        assert handle.attrs["backbone"] == "efficientnet-lite0"
        assert handle.attrs["image_size"] == 32
        assert handle.attrs["weights_sha256"] == backbones.BACKBONES[
            "efficientnet-lite0"].weights_sha256
        assert handle.attrs["source_sha256"] == fetch.source_sha256(
            tmp_path / "data" / "fashion-mnist" / "raw", "fashion-mnist")
        extraction = json.loads(handle.attrs["extraction"])
        source_files = json.loads(handle.attrs["source_files"])
        digest = handle.attrs["features_digest"]
    assert source_files == {name: fetch.digest_file(tmp_path / "src" / name, gunzip=True).sha256
                            for name in files}
    assert extraction["precision"] == "float32" and extraction["threads"] == 1
    assert extraction["extractor"] == backbones.EXTRACTOR_VERSION
    assert extraction["torch"] == torch.__version__
    assert extraction["aten_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    if backbones.platform.machine().lower() in ("x86_64", "amd64"):
        assert extraction["onednn_max_cpu_isa"] == os.environ.get("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert digest == features_digest(features)

    # features of another extractor version are extracted again, not reused
    calls = []
    real = backbones.extract_features
    monkeypatch.setattr(backbones, "extract_features",
                        lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    build_features("fashion-mnist", tmp_path / "data", image_size=32, batch_size=16)
    assert calls == []  # the same extractor: reused
    write_feature_file(path, dataclasses.replace(features, extra_attrs={
        **features.extra_attrs, "extraction": json.dumps({**extraction, "extractor": 1})}))
    build_features("fashion-mnist", tmp_path / "data", image_size=32, batch_size=16)
    assert calls == [1, 1, 1]  # train, query, database


def _float_map(query: np.ndarray, query_labels: np.ndarray, database: np.ndarray,
               database_labels: np.ndarray) -> float:
    """mAP@all of Euclidean ranking over the whole database (single-label)."""
    distances = ((query[:, None, :] - database[None, :, :]) ** 2).sum(axis=-1)
    order = np.argsort(distances, axis=1, kind="stable")
    relevant = database_labels[order] == query_labels[:, None]
    precision = np.cumsum(relevant, axis=1) / np.arange(1, relevant.shape[1] + 1)
    return float(((precision * relevant).sum(axis=1) / relevant.sum(axis=1)).mean())


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(),
                    reason="needs Debian's dataset-fashion-mnist (as root: `apt-get install "
                           "dataset-fashion-mnist` or `make system-deps`)")
def test_real_fashion_mnist_efficientnet_features_retrieve_well(tmp_path):
    """Download the real Fashion-MNIST (Debian copy, checksums verified), featurize a slice."""
    datasets.download("fashion-mnist", tmp_path)
    raw = datasets.DATASETS["fashion-mnist"].load_raw(tmp_path / "fashion-mnist" / "raw")
    assert raw.images.shape == (70_000, 28, 28) and raw.labels.shape == (70_000, 10)
    assert (raw.labels.sum(axis=0) == 7000).all()
    rng = np.random.default_rng(0)
    query = rng.choice(np.arange(60_000, 70_000), 100, replace=False)  # t10k
    database = rng.choice(60_000, 400, replace=False)  # train
    model = backbones.load_model("efficientnet-lite0", 64)
    query_features = backbones.extract_features(raw.images[query], model=model)
    database_features = backbones.extract_features(raw.images[database], model=model)
    query_labels, database_labels = raw.labels[query].argmax(1), raw.labels[database].argmax(1)
    score = _float_map(query_features, query_labels, database_features, database_labels)
    shuffled = _float_map(query_features, rng.permutation(query_labels), database_features,
                          database_labels)
    assert shuffled < 0.2  # about 0.1 = chance with 10 balanced classes
    assert score > 0.35, score
    distances = ((query_features[:, None] - database_features[None]) ** 2).sum(-1)
    nearest = database_labels[distances.argmin(axis=1)]
    assert (nearest == query_labels).mean() > 0.6
