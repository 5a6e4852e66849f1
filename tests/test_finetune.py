"""Fine-tuning the CNN's last blocks on cached trunk activations, and the torch device."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from datafakes import fashion_files, fashion_source
from runfakes import make_run
from tampering import forged_h5

from gslbench import data as datasets
from gslbench import devices, layout
from gslbench.cli import cli
from gslbench.config import RunConfig
from gslbench.data import activations, backbones, fashion_mnist, finetuning
from gslbench.data.featurefile import FeatureSet, read_feature_file
from gslbench.data.features import build_features
from gslbench.errors import GslbenchError
from gslbench.methods.loop import train
from gslbench.methods.model import build_model, embed
from gslbench.report.document import results_document
from gslbench.report.frames import read_runs
from gslbench.storage import sha256_file
from gslbench.train import load_config, load_model

IMAGE_SIZE = 32  # EfficientNet-Lite0's maps below its last blocks are 192 x 1 x 1 at 32 px
BLOCKS = 2
CONFIG = RunConfig(dataset="fashion-mnist", feature="efficientnet-lite0-32", method="qloss",
                   bits=8, sub_bits=2, dim_out=8, hidden=16, epochs=3, warmup_epochs=1,
                   epochs_per_refit=1, batch_size=10, lr=1e-2, train_blocks=BLOCKS)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_fashion(tmp_path_factory):
    """A 60-image Fashion-MNIST (3 queries, 3 training items per class, 30 in the database)
    with its 32 px EfficientNet-Lite0 feature file, the registry patched while the module runs."""
    root = tmp_path_factory.mktemp("fashion")
    files = fashion_files(train_per_class=5, test_per_class=1)
    (root / "src").mkdir()
    for name, content in files.items():
        (root / "src" / name).write_bytes(content)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fashion_mnist, "SOURCE", fashion_source(files, ((root / "src").as_uri() + "/",)))
        dataset = datasets.DATASETS["fashion-mnist"]
        patch.setitem(datasets.DATASETS, "fashion-mnist", dataclasses.replace(
            dataset, protocol=dataclasses.replace(dataset.protocol, query_per_class=1,
                                                  train_per_class=3)))
        datasets.download("fashion-mnist", root / "data")
        build_features("fashion-mnist", root / "data", image_size=IMAGE_SIZE, batch_size=16)
        yield root


def invoke(root: Path, *args: str):
    return CliRunner().invoke(cli, ["--data-dir", str(root / "data"),
                                    "--results-dir", str(root / "results"), *args])


def trunk_by_hand(images: np.ndarray, cut: int) -> np.ndarray:
    """The package's EfficientNet, run layer by layer (stem, blocks[:cut]) without gslbench's
    Trunk: (n, 28, 28) uint8 -> (n, C, H, W) float32."""
    network = backbones.load_model("efficientnet-lite0", IMAGE_SIZE)
    spec = backbones.get_backbone("efficientnet-lite0")
    with torch.no_grad():
        x = backbones.preprocess(torch.from_numpy(images[:, None]), IMAGE_SIZE, 255.0, spec.mean,
                                 spec.std)
        x = network._swish(network._bn0(network._conv_stem(x)))
        for block in network._blocks[:cut]:
            x = block(x)
    return x.numpy()


def test_cached_activations_equal_the_trunks_output_and_lead_to_the_features(tiny_fashion):
    data = tiny_fashion / "data"
    path = activations.ensure_activations(data, "fashion-mnist", CONFIG.feature, BLOCKS)
    assert path == layout.activations_path(data, "fashion-mnist", CONFIG.feature, BLOCKS)
    features = read_feature_file(layout.feature_path(data, "fashion-mnist", CONFIG.feature))
    raw = datasets.DATASETS["fashion-mnist"].load_raw(layout.raw_dir(data, "fashion-mnist"))
    with activations.open_activations(path, features, BLOCKS) as parts:
        assert {part: rows.shape for part, rows in parts.items()} == {
            "train": (30, 192, 1, 1), "query": (10, 192, 1, 1), "database": (20, 192, 1, 1)}
        rows = [0, 7, 19]
        cached = parts["database"][rows]
        every_part = {part: rows[()] for part, rows in parts.items()}
    expected = trunk_by_hand(raw.images[features.database.indices[rows]], 16 - BLOCKS)
    np.testing.assert_allclose(cached, expected, rtol=1e-5, atol=1e-4)  # float32 noise
    _, top = finetuning.split_network("efficientnet-lite0", IMAGE_SIZE, BLOCKS)
    with torch.no_grad():  # at the ImageNet weights, top(cache) is the feature file's feature
        for part, split in features.splits().items():
            pooled = top(torch.from_numpy(every_part[part])).numpy()
            np.testing.assert_allclose(pooled, split.features, rtol=1e-4, atol=1e-4)
    with h5py.File(path) as handle:
        assert handle.attrs["train_blocks"] == BLOCKS and handle.attrs["image_size"] == IMAGE_SIZE
        assert np.array_equal(handle["split/query"][()], features.query.indices)


def test_a_killed_cache_build_resumes_where_it_stopped(tiny_fashion, tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "fashion-mnist").mkdir(parents=True)
    for name in ("raw", f"{CONFIG.feature}.h5"):
        source = tiny_fashion / "data" / "fashion-mnist" / name
        target = data / "fashion-mnist" / name
        target.symlink_to(source, target_is_directory=source.is_dir())
    batches, killed = [], []
    real_trunk_forward = finetuning.Trunk.forward

    def dies_at_the_fourth_batch(self, x):
        batches.append(len(x))
        if len(batches) == 4 and not killed:
            killed.append(True)
            raise KeyboardInterrupt
        return real_trunk_forward(self, x)

    monkeypatch.setattr(finetuning.Trunk, "forward", dies_at_the_fourth_batch)
    with pytest.raises(KeyboardInterrupt):
        activations.ensure_activations(data, "fashion-mnist", CONFIG.feature, 1, batch_size=8)
    path = layout.activations_path(data, "fashion-mnist", CONFIG.feature, 1)
    partial = layout.partial_path(path)
    assert not path.exists() and partial.is_file()
    with h5py.File(partial) as handle:
        assert handle.attrs["train_rows_done"] == 24 and "query_rows_done" not in handle.attrs
    batches.clear()
    activations.ensure_activations(data, "fashion-mnist", CONFIG.feature, 1, batch_size=8)
    assert batches == [6, 8, 2, 8, 8, 4]  # the rest of train (30), query (10), database (20)
    assert path.is_file() and not partial.exists()
    with h5py.File(path) as handle:
        resumed = {part: handle[f"{part}/activations"][()] for part in ("train", "database")}
    path.unlink()  # the same batches without a kill give the same file
    activations.ensure_activations(data, "fashion-mnist", CONFIG.feature, 1, batch_size=8)
    with h5py.File(path) as handle:
        for part, rows in resumed.items():
            np.testing.assert_array_equal(rows, handle[f"{part}/activations"][()])


def test_the_cache_follows_its_feature_file_and_feeds_smaller_ones(tiny_fashion, tmp_path):
    data = tmp_path / "data"
    (data / "fashion-mnist").mkdir(parents=True)
    (data / "fashion-mnist" / "raw").symlink_to(tiny_fashion / "data" / "fashion-mnist" / "raw")
    feature_file = data / "fashion-mnist" / f"{CONFIG.feature}.h5"
    feature_file.write_bytes((tiny_fashion / "data" / "fashion-mnist" / feature_file.name).read_bytes())
    garbled = layout.partial_path(layout.activations_path(data, "fashion-mnist", CONFIG.feature, 3))
    garbled.write_bytes(b"what a kill mid-write can leave")  # unreadable: started afresh
    path = activations.ensure_activations(data, "fashion-mnist", CONFIG.feature, 3)
    assert not garbled.exists()
    built = path.stat().st_mtime_ns
    assert activations.ensure_activations(data, "fashion-mnist", CONFIG.feature, 3) == path
    assert path.stat().st_mtime_ns == built  # found, not computed again
    with forged_h5(feature_file) as handle:  # another feature file: the cache is stale
        handle.attrs["split_seed"] = 1
    activations.ensure_activations(data, "fashion-mnist", CONFIG.feature, 3)
    with h5py.File(path) as handle:
        assert handle.attrs["features_sha256"] == sha256_file(feature_file)
    features = read_feature_file(feature_file)
    with pytest.raises(GslbenchError, match="cached for --train-blocks 3, not 2"):
        with activations.open_activations(path, features, 2):
            pass
    smaller = activations.ensure_activations(data, "fashion-mnist", CONFIG.feature, 1)
    raw = datasets.DATASETS["fashion-mnist"].load_raw(data / "fashion-mnist" / "raw")
    with h5py.File(smaller) as handle:  # two blocks over N = 3's rows, not the whole trunk
        assert handle.attrs["computed_from"] == path.name
        np.testing.assert_allclose(handle["database/activations"][()],
                                   trunk_by_hand(raw.images[features.database.indices], 15),
                                   rtol=1e-5, atol=1e-4)


def training_inputs(root: Path) -> tuple[FeatureSet, Path, np.ndarray]:
    """The tiny set's features, its activation cache for BLOCKS and the training activations."""
    data = root / "data"
    features = read_feature_file(layout.feature_path(data, "fashion-mnist", CONFIG.feature))
    path = activations.ensure_activations(data, "fashion-mnist", CONFIG.feature, BLOCKS)
    with activations.open_activations(path, features, BLOCKS) as parts:
        return features, path, parts["train"][()]


def test_fine_tuning_trains_the_last_blocks_and_leaves_the_frozen_ones(tiny_fashion):
    features, path, inputs = training_inputs(tiny_fashion)
    trunk, top = finetuning.split_network("efficientnet-lite0", IMAGE_SIZE, BLOCKS)
    before_top = {name: value.clone() for name, value in top.state_dict().items()}
    before_trunk = {name: value.clone() for name, value in trunk.state_dict().items()}
    result = train(CONFIG, features, show_progress=False, top=top, inputs=inputs)
    assert result.model.top is top and len(top.blocks) == BLOCKS
    after = top.state_dict()
    trained = [name for name in after if not torch.equal(after[name], before_top[name])]
    weights = {name for name, p in top.named_parameters()}
    assert set(trained) == weights  # every weight of the last blocks and head conv moved ...
    assert any(name.startswith("blocks.0.") for name in trained)  # the first trained block too
    assert all("running_" in name or "num_batches" in name  # ... the batch norm statistics did not
               for name in set(after) - weights)
    for name, value in trunk.state_dict().items():  # the frozen blocks did not move
        assert torch.equal(value, before_trunk[name]), name
    assert not any(p.requires_grad for p in trunk.parameters())
    with activations.open_activations(path, features, BLOCKS) as parts:
        np.testing.assert_array_equal(parts["train"][()], inputs)  # nor did their activations


def test_train_encode_evaluate_a_fine_tuned_run(tiny_fashion):
    root = tiny_fashion
    options = ["train", "-d", "fashion-mnist", "--feature", CONFIG.feature, "--method", "qloss",
               "--bits", "6", "--sub-bits", "3", "--dim-out", "8", "--hidden", "16", "--epochs",
               "2", "--warmup-epochs", "1", "--epochs-per-refit", "1", "--batch-size", "10",
               "--device", "cpu"]
    frozen = invoke(root, *options)
    tuned = invoke(root, *options, "--train-blocks", "1")
    assert frozen.exit_code == 0 and tuned.exit_code == 0, tuned.output
    frozen_run, tuned_run = (layout.RunDir(Path(r.output.split()[-1])) for r in (frozen, tuned))
    assert frozen_run != tuned_run
    record = json.loads(tuned_run.config.read_text())
    assert record["config"]["train_blocks"] == 1 and record["device"] == {"type": "cpu"}
    cache = layout.activations_path(root / "data", "fashion-mnist", CONFIG.feature, 1)
    assert record["activations_file"] == str(cache) and len(record["activations_sha256"]) == 64
    assert json.loads(frozen_run.config.read_text())["config"]["train_blocks"] == 0
    for run in (frozen_run, tuned_run):
        for step in ("encode", "evaluate"):
            device = ["--device", "cpu"] if step == "encode" else []
            result = invoke(root, step, str(run.path), *device)
            assert result.exit_code == 0, result.output
    metrics = json.loads(tuned_run.metrics.read_text())
    assert metrics["devices"] == {"train": {"type": "cpu"}, "encode": {"type": "cpu"}}
    assert 0 < metrics["map"] <= 1
    # the queries went through the fine-tuned block: the model on the cached query activations
    saved = torch.load(tuned_run.model, weights_only=True)
    assert any(name.startswith("top.blocks.0.") for name in saved["state_dict"])
    features = read_feature_file(layout.feature_path(root / "data", "fashion-mnist", CONFIG.feature))
    model = load_model(tuned_run, load_config(tuned_run)[0], features.dim)
    with activations.open_activations(cache, features, 1) as parts:
        expected = embed(model, parts["query"])
    with h5py.File(tuned_run.codes) as handle:
        np.testing.assert_allclose(handle["query/representations"][()], expected, atol=1e-6)
        assert json.loads(handle.attrs["devices"])["encode"] == {"type": "cpu"}

    with h5py.File(cache, "r+") as handle:  # a cache that changed after training is refused
        handle.attrs["note"] = "edited"
    result = invoke(root, "encode", str(tuned_run.path), "--force")
    assert result.exit_code == 2
    assert result.output.startswith(f"gslbench: error: {cache}: its sha256 is not the one")


def test_fine_tuning_needs_a_cnn_feature(tiny_fashion):
    build_features("fashion-mnist", tiny_fashion / "data", backbone="pixels")
    result = invoke(tiny_fashion, "train", "-d", "fashion-mnist", "--feature", "pixels",
                    "--train-blocks", "1")
    assert result.output.strip() == (
        "gslbench: error: --train-blocks 1 fine-tunes a CNN, but the feature 'pixels' of "
        "fashion-mnist comes from pixels; use an efficientnet-lite0 feature")
    result = invoke(tiny_fashion, "train", "-d", "fashion-mnist", "--feature", CONFIG.feature,
                    "--train-blocks", "17")
    assert result.output.strip() == "gslbench: error: --train-blocks 17 is outside [0, 16]"


def test_a_channel_dead_on_the_training_features_is_not_blown_up_when_it_wakes():
    features = np.random.default_rng(0).random((50, 4), dtype=np.float32)
    features[:, 2] = 0.0  # a ReLU6 channel the frozen network never wakes
    model = build_model(RunConfig(hidden=8, dim_out=4), 4, top=torch.nn.Identity())
    model.set_standardisation(features)
    np.testing.assert_allclose(model.head.scale.numpy(), features.std(0) + [1e-6, 1e-6, 1, 1e-6],
                               rtol=1e-6)
    woken = torch.from_numpy(features[:5]).clone()
    woken[:, 2] = 0.01  # fine-tuning woke it a little: its input to the MLP is 0.01, not 1e4
    standardised = (woken - model.head.mean) / model.head.scale
    assert standardised[:, 2].tolist() == pytest.approx([0.01] * 5)


def test_the_report_keeps_fine_tuned_runs_apart(tmp_path):
    runs = [make_run(tmp_path, RunConfig(method=method, bits=16, seed=seed, train_blocks=blocks),
                     0.5 + 0.1 * blocks + 0.01 * seed)
            for method in ("float", "two-step", "gsl") for blocks in (0, 1) for seed in (0, 1)]
    data = read_runs(runs)
    assert sorted(set(data.results.feature)) == ["pixels", "pixels, last 1 block trained"]
    document = results_document(data)
    assert "### digits (pixels, last 1 block trained), pairwise loss, standard protocol" in document
    assert ("**digits (pixels, last 1 block trained), PQ, 256-word codebooks, pairwise loss: mAP"
            in document)
    assert "| float | 0.6050 ± 0.0071 (2) |" in document  # N = 1's two seeds, not N = 0's
    # the paired comparisons and the error table per feature too
    assert "**digits (pixels, last 1 block trained), PQ, 16 bits = 2 × 256 words" in document
    assert ("| digits | pixels, last 1 block trained | standard | pq | 256 | 16 | two-step | 0.3950 |"
            in document)
    assert "| digits | pq | 256 | 16 | pixels, last 1 block trained | gsl α=1 k=8 select=aligned |" \
        in document  # a comparison names its feature where the document holds several


def test_device_selection(monkeypatch):
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.describe_device(torch.device("cpu")) == {"type": "cpu"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    assert devices.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(GslbenchError, match="torch sees no CUDA device here"):
        devices.resolve_device("cuda")
    with pytest.raises(GslbenchError, match="torch sees no MPS device"):
        devices.resolve_device("mps")
    with pytest.raises(GslbenchError, match="unknown device 'tpu'"):
        devices.resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")
def test_training_on_cuda_matches_the_cpu_closely(tiny_fashion):
    features, _, inputs = training_inputs(tiny_fashion)
    results = {}
    for name in ("cpu", "cuda"):
        _, top = finetuning.split_network("efficientnet-lite0", IMAGE_SIZE, BLOCKS)
        results[name] = train(CONFIG, features, show_progress=False, top=top, inputs=inputs,
                              device=devices.resolve_device(name))
    assert next(results["cuda"].model.parameters()).device.type == "cuda"
    cpu_losses = [row["sim_loss"] for row in results["cpu"].log]
    cuda_losses = [row["sim_loss"] for row in results["cuda"].log]
    np.testing.assert_allclose(cuda_losses, cpu_losses, rtol=1e-3)
