"""Data sets end to end on fakes in the real formats: download, load, split, feature file."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import pickle

import h5py
import numpy as np
import pytest
from datafakes import (
    CIFAR_NAMES,
    cifar_source,
    cifar_tarball,
    fashion_files,
    fashion_source,
    idx_bytes,
    nuswide_tree,
)

from gslbench import data as datasets
from gslbench.data import Protocol, cifar10, fashion_mnist, fetch, nuswide21, split_indices
from gslbench.data.featurefile import multi_hot, read_feature_file
from gslbench.data.features import build_features, feature_name
from gslbench.errors import GslbenchError


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(fetch, "RETRY", fetch.RetryPolicy(attempts=2, backoff_s=0.0,
                                                                timeout_s=5.0))


def _small_protocol(monkeypatch, name: str, query: int, train: int) -> Protocol:
    dataset = datasets.DATASETS[name]
    protocol = dataclasses.replace(dataset.protocol, query_per_class=query, train_per_class=train)
    monkeypatch.setitem(datasets.DATASETS, name, dataclasses.replace(dataset, protocol=protocol))
    return protocol


# --- protocols and splits ----------------------------------------------------------------------

def test_protocols_follow_the_design_table():
    fashion, cifar, nus, digits = (datasets.get_dataset(n).protocol
                                   for n in ("fashion-mnist", "cifar10", "nuswide21", "digits"))
    assert fashion == cifar == Protocol(100, 500, None, train_in_database=False)
    assert nus == Protocol(100, 500, 5000, train_in_database=True)
    assert digits == Protocol(10, 50, None, train_in_database=True)
    assert datasets.get_dataset("nuswide21").default_feature == "bow"
    assert datasets.get_dataset("cifar10").default_feature == "efficientnet-lite0"


def test_split_with_train_outside_the_database():
    labels = multi_hot(np.repeat(np.arange(10), 7000), 10)  # like Fashion-MNIST
    split = split_indices(labels, Protocol(100, 500, None, train_in_database=False), seed=3)
    sizes = {part: len(indices) for part, indices in split.items()}
    assert sizes == {"query": 1000, "train": 5000, "validation_query": 1000,
                     "validation_database": 10000, "database": 53000}
    together = np.concatenate(list(split.values()))
    assert len(np.unique(together)) == 70000  # a partition of all items
    assert (labels[split["train"]].sum(axis=0) == 500).all()
    small = split_indices(labels[::10], Protocol(100, 500, None, False), seed=3)
    assert set(small) == {"query", "train", "database"}  # 100 left per class: no validation


def test_split_with_train_inside_the_database_for_digits():
    labels = multi_hot(np.repeat(np.arange(10), 80), 10)
    inside = split_indices(labels, Protocol(10, 20, None), seed=0)
    outside = split_indices(labels, Protocol(10, 20, None, train_in_database=False), seed=0)
    assert np.isin(inside["train"], inside["database"]).all()
    assert len(inside["database"]) == 800 - 100 - 100 - 110  # 11 = round(800 / 70) per class
    for part in ("query", "train", "validation_query", "validation_database"):
        np.testing.assert_array_equal(inside[part], outside[part])
    assert not np.isin(outside["train"], outside["database"]).any()


def test_split_multilabel_draws_per_concept():
    rng = np.random.default_rng(0)
    labels = (rng.random((400, 5)) < 0.3).astype(np.uint8)
    labels[labels.sum(axis=1) == 0, 0] = 1
    split = split_indices(labels, Protocol(4, 10, 50), seed=1)
    assert len(split["query"]) == 20 and len(split["train"]) == 50
    assert not np.isin(split["query"], split["database"]).any()


def test_unknown_names_are_user_errors(tmp_path):
    with pytest.raises(GslbenchError, match="unknown data set 'mnist'"):
        datasets.get_dataset("mnist")
    with pytest.raises(GslbenchError, match="has no feature 'resnet50'"):
        build_features("cifar10", tmp_path, backbone="resnet50")
    with pytest.raises(GslbenchError, match="has no feature 'efficientnet-lite0'"):
        build_features("nuswide21", tmp_path, backbone="efficientnet-lite0")


def test_feature_names_and_paths(tmp_path):
    assert feature_name("efficientnet-lite0", 64) == "efficientnet-lite0"
    assert feature_name("efficientnet-lite0", 224) == "efficientnet-lite0-224"
    assert feature_name("pixels", 224) == "pixels"
    assert datasets.feature_path(tmp_path, "cifar10") == tmp_path / "cifar10/efficientnet-lite0.h5"
    assert datasets.feature_path(tmp_path, "nuswide21") == tmp_path / "nuswide21/bow.h5"


# --- digits ------------------------------------------------------------------------------------

def test_digits_pixels_feature_file(tmp_path):
    datasets.download("digits", tmp_path)
    path = build_features("digits", tmp_path)
    assert path == tmp_path / "digits" / "pixels.h5"
    features = read_feature_file(path)
    assert features.dim == 64 and len(features.query.indices) == 100
    assert len(features.database.indices) == 1797 - 100 - 100 - 260  # the training items in it
    assert 0.0 <= features.train.features.min() and features.train.features.max() <= 1.0
    npz = tmp_path / "digits" / "raw" / "digits.npz"
    assert features.source_sha256 == hashlib.sha256(npz.read_bytes()).hexdigest()
    assert features.extra_attrs["backbone"] == "pixels" and features.extra_attrs["image_size"] == 8


# --- CIFAR-10 ----------------------------------------------------------------------------------

@pytest.fixture
def fake_cifar(server, monkeypatch):
    tarball, members = cifar_tarball(per_class_per_batch=2)
    source = cifar_source(tarball, members, (server.add("cifar-10-python.tar.gz", tarball),))
    monkeypatch.setattr(cifar10, "SOURCE", source)
    return tarball, members


def test_cifar10_download_and_pixel_features(fake_cifar, tmp_path, monkeypatch):
    tarball, members = fake_cifar
    folder = datasets.download("cifar10", tmp_path)
    assert folder == tmp_path / "cifar10" / "raw" / "cifar-10-batches-py"
    assert (folder / "data_batch_5").read_bytes() == members["cifar-10-batches-py/data_batch_5"]
    _small_protocol(monkeypatch, "cifar10", query=2, train=3)  # 12 images per class
    path = build_features("cifar10", tmp_path, backbone="pixels")
    assert path == tmp_path / "cifar10" / "pixels.h5"
    features = read_feature_file(path)
    assert features.label_names == CIFAR_NAMES and features.dim == 3072
    assert (len(features.query.indices), len(features.train.indices)) == (20, 30)
    assert len(features.database.indices) == 120 - 50  # train kept out; too few for validation
    parts = [set(s.indices) for s in features.parts().values()]
    assert set.union(*parts) == set(range(120)) and sum(map(len, parts)) == 120
    assert features.source_sha256 == hashlib.sha256(tarball).hexdigest()
    # row i of the source is image i of data_batch_1 (batches in order), labels match
    first = pickle.loads(members["cifar-10-batches-py/data_batch_1"])
    row = np.flatnonzero(features.database.indices < 20)[0]
    index = features.database.indices[row]
    np.testing.assert_allclose(features.database.features[row] * 255,
                               first[b"data"][index].astype(np.float32), atol=1e-3)
    assert features.database.labels[row].argmax() == first[b"labels"][index]
    assert json.loads(features.extra_attrs["protocol"])["train_in_database"] is False


def test_cifar10_download_twice_fetches_once(fake_cifar, server, tmp_path):
    datasets.download("cifar10", tmp_path)
    datasets.download("cifar10", tmp_path)
    assert len(server.requests_for("cifar-10-python.tar.gz")) == 1


def test_cifar10_batch_is_checked_before_it_is_unpickled(fake_cifar, tmp_path, monkeypatch):
    datasets.download("cifar10", tmp_path)
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    batch = tmp_path / "cifar10" / "raw" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps(Payload(), protocol=2))
    with pytest.raises(GslbenchError, match="data_batch_3: md5 checksum mismatch"):
        build_features("cifar10", tmp_path, backbone="pixels")
    assert not marker.exists()
    # even with a matching checksum, only arrays and containers are unpickled
    source = cifar10.SOURCE
    evil_md5 = hashlib.md5(batch.read_bytes()).hexdigest()
    extracted = tuple((n, evil_md5 if n.endswith("data_batch_3") else m)
                      for n, m in source.extracted)
    monkeypatch.setattr(cifar10, "SOURCE", dataclasses.replace(source,
                                                                         extracted=extracted))
    with pytest.raises(GslbenchError, match="not a CIFAR-10 batch \\(refusing to load io.open\\)"):
        build_features("cifar10", tmp_path, backbone="pixels")
    assert not marker.exists()


def test_cifar10_corrupt_tarball_leaves_nothing_valid(server, tmp_path, monkeypatch):
    tarball, members = cifar_tarball(per_class_per_batch=1)
    damaged = bytearray(tarball)
    damaged[len(damaged) // 2] ^= 0xFF
    url = server.add("cifar-10-python.tar.gz", bytes(damaged))
    monkeypatch.setattr(cifar10, "SOURCE", cifar_source(tarball, members, (url,)))
    with pytest.raises(GslbenchError, match="checksum mismatch"):
        datasets.download("cifar10", tmp_path)
    raw = tmp_path / "cifar10" / "raw"
    assert list(raw.iterdir()) == []
    with pytest.raises(GslbenchError, match="run `gslbench download cifar10` first"):
        build_features("cifar10", tmp_path, backbone="pixels")


def test_cifar10_without_network_says_where_to_put_the_file(tmp_path, monkeypatch):
    tarball, members = cifar_tarball(per_class_per_batch=1)
    from datafakes import closed_port_url

    url = closed_port_url("cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar10, "SOURCE", cifar_source(tarball, members, (url,)))
    with pytest.raises(GslbenchError) as info:
        datasets.download("cifar10", tmp_path)
    message = str(info.value)
    assert url in message and "\n" not in message
    assert str(tmp_path / "cifar10" / "raw" / "cifar-10-python.tar.gz") in message
    assert "--from" in message


def test_cifar10_import_from_folder(tmp_path, monkeypatch):
    tarball, members = cifar_tarball(per_class_per_batch=1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "cifar-10-python.tar.gz").write_bytes(tarball)
    monkeypatch.setattr(cifar10, "SOURCE",
                        cifar_source(tarball, members, ("http://127.0.0.1:9/unused",)))
    folder = datasets.download("cifar10", tmp_path / "data", from_dir=tmp_path / "mine")
    assert (folder / "batches.meta").is_file()


# --- Fashion-MNIST -----------------------------------------------------------------------------

@pytest.fixture
def fake_fashion(server, monkeypatch, tmp_path):
    files = fashion_files(train_per_class=6, test_per_class=2)
    for name, data in files.items():
        server.add(name, data)
    missing_debian = (tmp_path / "no-debian-copy").as_uri() + "/"
    source = fashion_source(files, (missing_debian, server.url("")))
    monkeypatch.setattr(fashion_mnist, "SOURCE", source)
    return files


def test_fashion_mnist_download_and_pixel_features(fake_fashion, tmp_path, monkeypatch):
    raw = datasets.download("fashion-mnist", tmp_path / "data")
    assert sorted(p.name for p in raw.iterdir()) == sorted([*fake_fashion, "SOURCE.json"])
    _small_protocol(monkeypatch, "fashion-mnist", query=2, train=3)  # 8 per class
    path = build_features("fashion-mnist", tmp_path / "data", backbone="pixels")
    features = read_feature_file(path)
    assert features.dim == 784 and features.n_classes == 10 and not features.multilabel
    assert (len(features.query.indices), len(features.train.indices),
            len(features.database.indices)) == (20, 30, 30)
    assert features.label_names[0] == "T-shirt/top" and features.label_names[9] == "Ankle boot"
    # rows 0..59 are the train file, 60..79 t10k, in order
    t10k = gzip.decompress(fake_fashion["t10k-images-idx3-ubyte.gz"])[16:]
    t10k = np.frombuffer(t10k, np.uint8).reshape(-1, 784)
    row = np.flatnonzero(features.database.indices >= 60)[0]
    np.testing.assert_allclose(features.database.features[row] * 255,
                               t10k[features.database.indices[row] - 60], atol=1e-3)
    with h5py.File(path) as handle:
        assert handle.attrs["backbone"] == "pixels" and handle.attrs["image_size"] == 28


def test_fashion_mnist_gzip_recompressed_by_a_mirror_is_accepted(server, tmp_path, monkeypatch):
    files = fashion_files(train_per_class=2, test_per_class=1)
    source = fashion_source(files, (server.url(""),))
    for name, data in files.items():  # a mirror that recompressed every file
        server.add(name, gzip.compress(gzip.decompress(data), compresslevel=1, mtime=99))
    monkeypatch.setattr(fashion_mnist, "SOURCE", source)
    raw = datasets.download("fashion-mnist", tmp_path)
    for name, data in files.items():  # other bytes than the official .gz, the same content
        assert (raw / name).read_bytes() != data
        assert gzip.decompress((raw / name).read_bytes()) == gzip.decompress(data)
    loaded = datasets.get_dataset("fashion-mnist").load_raw(raw)
    assert loaded.images.shape[0] == len(loaded.labels) > 0


def test_fashion_mnist_bad_idx_is_a_user_error(tmp_path, monkeypatch):
    files = fashion_files(train_per_class=2, test_per_class=1)
    files["t10k-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(np.zeros(7, np.uint8))[:-2])
    source = fashion_source(files, ((tmp_path / "src").as_uri() + "/",))
    (tmp_path / "src").mkdir()
    for name, data in files.items():
        (tmp_path / "src" / name).write_bytes(data)
    monkeypatch.setattr(fashion_mnist, "SOURCE", source)
    datasets.download("fashion-mnist", tmp_path / "data")
    with pytest.raises(GslbenchError, match=r"t10k-labels-idx1-ubyte.gz: idx header says \(7,\)"):
        build_features("fashion-mnist", tmp_path / "data", backbone="pixels")


def test_fashion_mnist_registry_prefers_the_debian_copy():
    for remote in fashion_mnist.SOURCE.files:
        assert remote.urls[0] == f"file:///usr/share/datasets/fashion-mnist/{remote.name}"


# --- NUS-WIDE ----------------------------------------------------------------------------------

def test_nuswide_download_without_files_explains_what_to_place(tmp_path):
    with pytest.raises(GslbenchError) as info:
        datasets.download("nuswide21", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    for needed in ("Groundtruth/AllLabels/Labels_*.txt", "Low_Level_Features", "ImageList",
                   "--from DIR", str(tmp_path / "nuswide21" / "raw")):
        assert needed in message
    with pytest.raises(GslbenchError, match="no URL serves NUS-WIDE"):
        datasets.download("nuswide21", tmp_path, url="http://example.org/nus.zip")


def test_nuswide_import_checks_the_layout(tmp_path):
    (tmp_path / "nus" / "Groundtruth" / "AllLabels").mkdir(parents=True)
    with pytest.raises(GslbenchError, match="found 0 Labels_"):
        datasets.download("nuswide21", tmp_path / "data", from_dir=tmp_path / "nus")


@pytest.fixture
def fake_nuswide(tmp_path):
    fake = nuswide_tree(tmp_path / "NUS-WIDE", n_images=500)
    datasets.download("nuswide21", tmp_path / "data", from_dir=fake.root)
    return fake


def test_nuswide_keeps_the_21_most_frequent_concepts(fake_nuswide, tmp_path):
    raw = datasets.DATASETS["nuswide21"].load_raw(tmp_path / "data" / "nuswide21" / "raw")
    counts = fake_nuswide.labels.sum(axis=0, dtype=np.int64)
    top = np.argsort(-counts, kind="stable")[:21]
    assert sorted(raw.label_names) == raw.label_names
    assert set(raw.label_names) == {fake_nuswide.concepts[c] for c in top}
    kept = fake_nuswide.labels[:, sorted(top)].any(axis=1)
    assert 0 < kept.sum() < 500  # some images have none of the 21 and are dropped
    assert raw.labels.shape == (kept.sum(), 21) and raw.labels.any(axis=1).all()
    np.testing.assert_allclose(raw.vectors("cm55"), fake_nuswide.features["cm55"][kept], atol=1e-6)
    np.testing.assert_allclose(raw.vectors("ch"), fake_nuswide.features["ch"][kept], atol=1e-6)
    # BoW comes in Train/Test halves, put back in Imagelist order
    np.testing.assert_array_equal(raw.vectors("bow"), fake_nuswide.features["bow"][kept])


def test_nuswide_feature_file(fake_nuswide, tmp_path, monkeypatch):
    _small_protocol(monkeypatch, "nuswide21", query=2, train=3)
    path = build_features("nuswide21", tmp_path / "data", backbone="bow+cm55")
    assert path == tmp_path / "data" / "nuswide21" / "bow+cm55.h5"
    features = read_feature_file(path)
    assert features.dim == 725 and features.n_classes == 21 and features.multilabel
    assert len(features.query.indices) == 42 and len(features.train.indices) == 63
    assert np.isin(features.train.indices, features.database.indices).all()
    assert json.loads(features.extra_attrs["protocol"])["map_top"] == 5000
    assert features.extra_attrs["backbone"] == "bow+cm55"
    assert features.source_sha256 == fetch.source_sha256(
        tmp_path / "data" / "nuswide21" / "raw", "nuswide21")


def test_nuswide_row_count_mismatch_names_the_file(fake_nuswide, tmp_path):
    feature = tmp_path / "data" / "nuswide21" / "raw" / "Low_Level_Features" / "Normalized_CM55.dat"
    lines = feature.read_text().splitlines(keepends=True)
    feature.write_text("".join(lines[:-3]))
    raw = datasets.DATASETS["nuswide21"].load_raw(tmp_path / "data" / "nuswide21" / "raw")
    with pytest.raises(GslbenchError, match="Normalized_CM55.dat: 497 rows x 225 columns, "
                                            "expected 500 x 225"):
        raw.vectors("cm55")


def test_nuswide_label_files_must_agree(fake_nuswide, tmp_path):
    labels = tmp_path / "data" / "nuswide21" / "raw" / "Groundtruth" / "AllLabels"
    victim = sorted(labels.iterdir())[5]
    victim.write_bytes(victim.read_bytes() + b"1\r\n")
    with pytest.raises(GslbenchError, match=f"{victim.name}: 501 rows"):
        datasets.DATASETS["nuswide21"].load_raw(labels.parent.parent)
    victim.write_bytes(b"2\r\n" * 500)
    with pytest.raises(GslbenchError, match="one 0 or 1 per line"):
        datasets.DATASETS["nuswide21"].load_raw(labels.parent.parent)


def test_nuswide_split_feature_needs_the_image_lists(fake_nuswide, tmp_path):
    raw_dir = tmp_path / "data" / "nuswide21" / "raw"
    (raw_dir / "ImageList" / "TestImagelist.txt").unlink()
    raw = datasets.DATASETS["nuswide21"].load_raw(raw_dir)
    with pytest.raises(GslbenchError, match="TestImagelist.txt: no such file"):
        raw.vectors("bow")
    with pytest.raises(GslbenchError, match="no file for feature 'wt'"):
        raw.vectors("wt")


def test_read_text_matrix_tolerates_a_stray_trailing_column(tmp_path):
    path = tmp_path / "m.dat"
    path.write_text("1 2 3 \n4 5 6 \n")
    np.testing.assert_array_equal(nuswide21.read_text_matrix(path, 3, 2), [[1, 2, 3], [4, 5, 6]])
    path.write_text("1 2 3 0\n4 5 6 0\n")
    np.testing.assert_array_equal(nuswide21.read_text_matrix(path, 3, 2), [[1, 2, 3], [4, 5, 6]])
    path.write_text("1 2 3 0\n4 5 6 1\n")
    with pytest.raises(GslbenchError, match="2 rows x 4 columns, expected 2 x 3"):
        nuswide21.read_text_matrix(path, 3, 2)
    path.write_text("1 2 x\n4 5 6\n")
    with pytest.raises(GslbenchError, match="m.dat"):
        nuswide21.read_text_matrix(path, 3, 2)
