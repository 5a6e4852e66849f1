"""Reuse (gslbench.checkpoints): runs started from another run's training state give the same
bits as runs trained from scratch; damaged or foreign checkpoints are never used; bench
dispatches the cells others start from first."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

# tiny_fashion: test_finetune's fixture (a 60-image Fashion-MNIST with its CNN feature file)
from test_finetune import BLOCKS, CONFIG, IMAGE_SIZE, tiny_fashion, training_inputs  # noqa: F401

from gslbench import bench
from gslbench.bench import order
from gslbench.bench.executors import ExecutorConfig
from gslbench.bench.grid import Cells
from gslbench.checkpoints import Checkpoints, checkpoint_epochs, plain_epochs
from gslbench.cli import cli
from gslbench.config import RunConfig
from gslbench.data import download, feature_path, finetuning
from gslbench.data.featurefile import read_feature_file
from gslbench.data.features import build_features
from gslbench.encode import encode_run
from gslbench.evaluation.step import evaluate_run
from gslbench.layout import RunDir, checkpoints_dir
from gslbench.methods.loop import train
from gslbench.train import run_features, train_run

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = ("float", "two-step", "qloss", "gsl", "ste", "soft", "gumbel")
# epochs 7 with the common warm-up of 5: float saves the states after 5 and 7 epochs, two-step
# starts from the one after 7, the others from the one after 5; a refit every epoch
BASE = RunConfig(dataset="digits", feature="pixels", quantizer="pq", bits=8, sub_bits=4,
                 dim_out=16, hidden=32, epochs=7, warmup_epochs=5, epochs_per_refit=1,
                 batch_size=64)
# a quantized run that saves the warm-up's state and is none of the runs compared
PRODUCER = dataclasses.replace(BASE, method="ste", ste_beta=0.5)
CLI_SETTINGS = ["-d", "digits", "--quantizer", "pq", "--bits", "8", "--sub-bits", "4",
                "--dim-out", "16", "--hidden", "32", "--epochs", "7", "--warmup-epochs", "5",
                "--epochs-per-refit", "1", "--batch-size", "64", "--device", "cpu"]


def make_features(data_dir: Path, split_seed: int = 0) -> Path:
    download("digits", data_dir)
    return build_features("digits", data_dir, split_seed=split_seed)


def evaluated(config: RunConfig, data_dir: Path, results_dir: Path, **options) -> RunDir:
    """Train (`options`: train_run's), encode and evaluate a run."""
    run = train_run(config, data_dir, results_dir, show_progress=False, device="cpu", **options)
    encode_run(run.path, data_dir, results_dir, device="cpu")
    evaluate_run(run.path, results_dir)
    return run


def record(run: RunDir) -> dict:
    return json.loads(run.config.read_text())


def assert_same_results(reused: RunDir, scratch: RunDir) -> None:
    """The same weights, codebooks, codes and representations, and the same mAPs, to the bit."""
    first, second = (torch.load(run.model, weights_only=True)["state_dict"]
                     for run in (reused, scratch))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    files = [("codes.h5", reused.codes, scratch.codes)]
    if reused.quantizer.is_file():
        files.append(("quantizer.h5", reused.quantizer, scratch.quantizer))
    for _, mine, theirs in files:
        with h5py.File(mine) as a, h5py.File(theirs) as b:
            names: list[str] = []
            a.visit(names.append)
            datasets = [name for name in names if isinstance(a[name], h5py.Dataset)]
            assert datasets
            for name in datasets:
                assert (a[name][()] == b[name][()]).all(), name
    metrics = [json.loads(run.metrics.read_text()) for run in (reused, scratch)]
    for key in ("map", "map_at", "precision_at", "recall_at", "pr_curve"):
        assert metrics[0][key] == metrics[1][key], key


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("reuse_data")
    make_features(path)
    return path


class Runs:
    """Runs trained with reuse (in `reuse`, after PRODUCER saved the warm-up's state) and from
    scratch (in `scratch`, reuse off), each trained once per module."""

    def __init__(self, data_dir: Path, root: Path) -> None:
        self.data_dir, self.reuse, self.scratch = data_dir, root / "reuse", root / "scratch"
        self.done: dict[tuple[str, str], RunDir] = {}
        train_run(PRODUCER, data_dir, self.reuse, show_progress=False, device="cpu")

    def get(self, method: str, reuse: bool) -> RunDir:
        key = (method, "reuse" if reuse else "scratch")
        if key not in self.done:
            if method == "two-step" and reuse:  # starts from float's trained network
                self.get("float", True)
            self.done[key] = evaluated(dataclasses.replace(BASE, method=method), self.data_dir,
                                       self.reuse if reuse else self.scratch, reuse=reuse)
        return self.done[key]


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    return Runs(data_dir, tmp_path_factory.mktemp("reuse_runs"))


@pytest.mark.parametrize("method", METHODS)
def test_a_run_started_from_a_checkpoint_is_bit_identical(runs, method):
    reused, scratch = runs.get(method, True), runs.get(method, False)
    assert_same_results(reused, scratch)
    start = 7 if method == "two-step" else 5
    config = dataclasses.replace(BASE, method=method)
    checkpoint = Checkpoints.for_run(runs.reuse, config,
                                     run_features(config, runs.data_dir).sha256,
                                     {"type": "cpu"}, {"torch": 1, "faiss": 1})
    assert record(reused)["started_from"] == {"checkpoint": checkpoint.checkpoint_id(start),
                                              "epoch": start}
    assert record(reused)["epochs_trained"] == 7 - start
    assert record(scratch)["started_from"] is None and record(scratch)["epochs_trained"] == 7
    # two-step's refits before its last only serve the log: not computed when it starts after them
    assert record(reused)["refits_not_computed"] == ([5, 6] if method == "two-step" else [])
    assert record(scratch)["refits_not_computed"] == []


def test_gsl_at_alpha_0_starts_from_floats_trained_network(runs):
    """Nothing snaps at α = 0, so the run is float's training to its last epoch: like two-step it
    starts from float's trained network, fits its codebooks and gives the bits of a run trained
    from scratch."""
    runs.get("float", True)
    config = dataclasses.replace(BASE, method="gsl", gsl_alpha=0.0)
    reused = evaluated(config, runs.data_dir, runs.reuse)
    scratch = evaluated(config, runs.data_dir, runs.scratch, reuse=False)
    assert_same_results(reused, scratch)
    assert record(reused)["started_from"]["epoch"] == 7 and record(reused)["epochs_trained"] == 0
    assert record(reused)["refits_not_computed"] == [5, 6]
    assert record(scratch)["started_from"] is None and record(scratch)["epochs_trained"] == 7


def test_the_log_keeps_the_reused_epochs(runs):
    reused, scratch = (pd.read_csv(runs.get("gsl", reuse).train_log) for reuse in (True, False))
    assert reused.epoch.tolist() == scratch.epoch.tolist() == list(range(1, 8))
    assert reused.sim_loss.tolist() == scratch.sim_loss.tolist()
    columns = ["quant_mse", "quant_mse_refit"]
    pd.testing.assert_frame_equal(reused[columns], scratch[columns])


def test_no_reuse_trains_everything_and_saves_nothing(runs, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(checkpoints_dir(runs.reuse), checkpoints_dir(results))
    before = sorted(path.name for path in checkpoints_dir(results).iterdir())
    base = ["--data-dir", str(runs.data_dir), "--results-dir", str(results), "-q"]
    out = CliRunner().invoke(cli, [*base, "train", *CLI_SETTINGS, "--method", "float",
                                   "--no-reuse"])
    assert out.exit_code == 0, out.output
    run = RunDir(Path(out.output.strip()))
    assert record(run)["started_from"] is None and record(run)["epochs_trained"] == 7
    assert sorted(path.name for path in checkpoints_dir(results).iterdir()) == before


def test_a_checkpoint_written_by_another_process_is_used(runs, tmp_path):
    results = tmp_path / "results"
    command = [sys.executable, "-c", "from gslbench.cli import main; main()", "--data-dir",
               str(runs.data_dir), "--results-dir", str(results), "-q", "train", *CLI_SETTINGS,
               "--method", "float"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # this module's thread count (part of the key)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    run = evaluated(dataclasses.replace(BASE, method="gsl"), runs.data_dir, results)
    assert record(run)["started_from"]["epoch"] == 5
    assert_same_results(run, runs.get("gsl", False))


def damage(path: Path, how: str, foreign: Path) -> None:
    data = path.read_bytes()
    if how == "corrupted":  # one byte of the weights flipped
        path.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # a checkpoint made from another feature file, under this one's name
        shutil.copyfile(foreign, path)


@pytest.fixture(scope="module")
def foreign_checkpoint(data_dir, tmp_path_factory):
    """The warm-up state of a run on another digits feature file (another split seed)."""
    root = tmp_path_factory.mktemp("foreign")
    make_features(root / "data", split_seed=1)
    config = dataclasses.replace(PRODUCER, epochs=6)
    train_run(config, root / "data", root / "results", show_progress=False, device="cpu")
    checkpoint = Checkpoints.for_run(root / "results", config,
                                     run_features(config, root / "data").sha256,
                                     {"type": "cpu"}, {"torch": 1, "faiss": 1})
    return checkpoint.path(5)


@pytest.mark.parametrize("how, reason", [("corrupted", "does not match the size and sha256"),
                                         ("truncated", "does not match the size and sha256"),
                                         ("foreign", "differs in features_sha256")])
def test_a_damaged_or_foreign_checkpoint_is_never_used(runs, tmp_path, caplog,
                                                       foreign_checkpoint, how, reason):
    results = tmp_path / "results"
    config = dataclasses.replace(BASE, method="gsl")
    checkpoints = Checkpoints.for_run(results, config,
                                      run_features(config, runs.data_dir).sha256,
                                      {"type": "cpu"}, {"torch": 1, "faiss": 1})
    checkpoints.folder.mkdir(parents=True)
    shutil.copyfile(runs.reuse / "checkpoints" / checkpoints.path(5).name, checkpoints.path(5))
    assert checkpoints.load(5) is not None
    damage(checkpoints.path(5), how, foreign_checkpoint)
    with caplog.at_level(logging.WARNING):
        run = evaluated(config, runs.data_dir, results)
    assert f"{checkpoints.path(5)}: " in caplog.text and reason in caplog.text
    assert record(run)["started_from"] is None and record(run)["epochs_trained"] == 7
    assert_same_results(run, runs.get("gsl", False))
    assert checkpoints.load(5) is not None  # written again by the run that could not use it


def test_checkpoint_epochs_follow_what_each_method_shares_with_float():
    expect = {"float": (7, [5, 7]), "two-step": (7, [5, 7]), "gsl": (5, [5]), "gumbel": (5, [5])}
    for method, (plain, marks) in expect.items():
        config = dataclasses.replace(BASE, method=method).resolved()
        assert (plain_epochs(config), checkpoint_epochs(config)) == (plain, marks)
    for alpha, plain in ((0.0, 7), (1e-6, 5)):  # at α = 0 nothing snaps: float's to the end
        config = dataclasses.replace(BASE, method="gsl", gsl_alpha=alpha)
        assert plain_epochs(config) == plain
    late = dataclasses.replace(BASE, method="qloss", epochs=20, warmup_epochs=8)
    assert checkpoint_epochs(late) == [5, 8]  # starts from float's 5 when no 8 is saved
    assert checkpoint_epochs(dataclasses.replace(late, warmup_epochs=0)) == []


def cell(method: str, seed: int = 0, **settings) -> RunConfig:
    return dataclasses.replace(BASE, method=method, seed=seed, **settings).resolved()


def test_reuse_plan_names_each_cells_producer():
    gsl, two_step, qloss, float_ = cell("gsl"), cell("two-step"), cell("qloss"), cell("float")
    gsl1, float1 = cell("gsl", 1), cell("float", 1)
    late, late2 = cell("gsl", warmup_epochs=6), cell("qloss", warmup_epochs=6)
    other = cell("gsl", lr=0.01)  # other plain settings: nobody's
    control = cell("gsl", gsl_alpha=0.0)  # float's training to the end, as two-step's
    cells = [gsl, two_step, qloss, float_, gsl1, late, late2, float1, other, control]
    plan = order.reuse_plan(cells)
    assert plan == {two_step.run_id: (float_.run_id, 7), control.run_id: (float_.run_id, 7),
                    gsl.run_id: (float_.run_id, 5),
                    qloss.run_id: (float_.run_id, 5), gsl1.run_id: (float1.run_id, 5),
                    late.run_id: (float_.run_id, 5), late2.run_id: (late.run_id, 6)}
    dependencies = {run_id: order.Dependency(*producer) for run_id, producer in plan.items()}
    dispatched = [config.run_id for config in order.producers_first(cells, dependencies)]
    assert dispatched == [float_.run_id, float1.run_id, late.run_id, gsl.run_id, two_step.run_id,
                     qloss.run_id, gsl1.run_id, late2.run_id, other.run_id, control.run_id]


def test_bench_runs_dependents_after_their_producer_without_serialising(monkeypatch, tmp_path):
    """Two workers: both producers start at once, each dependent only after its producer."""
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def fake_cell(config, *args):
        with lock:
            events.append(("start", config.run_id))
        time.sleep(0.3)
        with lock:
            events.append(("end", config.run_id))

    monkeypatch.setattr(bench, "run_cell", fake_cell)
    cells = [cell("gsl"), cell("two-step"), cell("gsl", 1), cell("float"), cell("float", 1)]
    plan = {run_id: order.Dependency(producer, epochs, tmp_path / f"{run_id}.ckpt")
            for run_id, (producer, epochs) in order.reuse_plan(cells).items()}
    todo = order.producers_first(cells, plan)
    pool = ThreadPoolExecutor(2)
    pool.capacity = 2
    with pool, bench.Progress(len(cells), 0, Cells(tuple(cells)), bar=False) as progress:
        failed = bench._dispatch(pool, todo, plan, progress, tmp_path, tmp_path,
                                 ExecutorConfig(jobs=2), False, ("train",), True)
    assert failed == []
    assert set(events[:2]) == {("start", cells[3].run_id), ("start", cells[4].run_id)}
    for run_id, dependency in plan.items():
        assert events.index(("end", dependency.producer)) < events.index(("start", run_id))


def test_a_dependent_starts_once_its_checkpoint_is_on_disk(monkeypatch, tmp_path):
    started = []
    producer, dependent = cell("float"), cell("gsl")
    plan = {dependent.run_id: order.Dependency(producer.run_id, 5, tmp_path / "warm-up.ckpt")}

    def fake_cell(config, *args):
        started.append(config.run_id)
        if config.run_id == producer.run_id:  # saves the warm-up's state, then trains on
            (tmp_path / "warm-up.ckpt").write_text("")
            while len(started) < 2:
                time.sleep(0.05)

    monkeypatch.setattr(bench, "run_cell", fake_cell)
    pool = ThreadPoolExecutor(2)
    pool.capacity = 2
    with pool, bench.Progress(2, 0, Cells((producer, dependent)), bar=False) as progress:
        assert bench._dispatch(pool, [producer, dependent], plan, progress, tmp_path, tmp_path,
                               ExecutorConfig(jobs=2), False, ("train",), True) == []
    assert started == [producer.run_id, dependent.run_id]


def test_bench_grid_reuses_float_and_the_warm_up(data_dir, tmp_path):
    cells = [cell("gsl"), cell("two-step"), cell("float")]
    executor = ExecutorConfig(cpus_per_cell=1, device="cpu")
    result = bench.run_grid(Cells(tuple(cells)), data_dir, tmp_path / "results", executor,
                            show_progress=False)
    assert result.failed == ()
    started = {record(run)["config"]["method"]: record(run)["started_from"]
               for run in result.run_dirs}
    assert started["float"] is None
    assert started["two-step"]["epoch"] == 7 and started["gsl"]["epoch"] == 5
    # bench names each checkpoint as its workers do, so a dependent starts once it is there
    features = {("digits", "pixels"): run_features(cells[0], data_dir)}
    plan = order.dependencies(cells, features, tmp_path / "results", executor)
    assert len(plan) == 2 and all(dependency.path.is_file() for dependency in plan.values())
    assert {dependency.path.stem for dependency in plan.values()} == {
        started["two-step"]["checkpoint"], started["gsl"]["checkpoint"]}


def test_a_fine_tuned_run_started_from_the_warm_up_is_bit_identical(request, tmp_path):
    features, _, inputs = training_inputs(request.getfixturevalue("tiny_fashion"))
    checkpoints = Checkpoints.for_run(tmp_path, CONFIG, "features", {"type": "cpu"},
                                      {"torch": 1, "faiss": 1}, "activations")

    def fine_tuned(config, reuse):
        top = finetuning.split_network("efficientnet-lite0", IMAGE_SIZE, BLOCKS)[1]
        return train(config, features, show_progress=False, top=top, inputs=inputs,
                     checkpoints=checkpoints if reuse else None)

    fine_tuned(dataclasses.replace(CONFIG, qloss_lambda=1.0), True)  # saves the warm-up's state
    reused, scratch = fine_tuned(CONFIG, True), fine_tuned(CONFIG, False)
    assert reused.started_from == {"checkpoint": checkpoints.checkpoint_id(1), "epoch": 1}
    first, second = reused.model.state_dict(), scratch.model.state_dict()
    assert any(name.startswith("top.blocks.0.") for name in first)
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert (reused.quantizer.codebooks == scratch.quantizer.codebooks).all()


def test_a_forged_checkpoint_that_does_not_fit_is_not_used(data_dir, tmp_path, caplog):
    """A checkpoint bound to this run's key and sha256-valid, but holding another network."""
    features = read_feature_file(feature_path(data_dir, "digits", "pixels"))
    config, wider = (dataclasses.replace(BASE, method="gsl", hidden=hidden).resolved()
                     for hidden in (32, 48))
    mine, theirs = (Checkpoints.for_run(tmp_path, c, "features", {"type": "cpu"},
                                        {"torch": 1, "faiss": 1}) for c in (config, wider))
    train(wider, features, show_progress=False, checkpoints=theirs)
    mine.save(5, theirs.load(5))
    with caplog.at_level(logging.WARNING):
        forged = train(config, features, show_progress=False, checkpoints=mine)
    assert "does not fit this run" in caplog.text and forged.started_from is None
    scratch = train(config, features, show_progress=False)
    assert all(torch.equal(a, b) for a, b in zip(forged.model.state_dict().values(),
                                                 scratch.model.state_dict().values(), strict=True))
    assert mine.load(5)["model"]["layers.0.weight"].shape == (32, 64)  # saved again, right


def test_a_checkpoint_made_on_another_kind_of_cpu_is_not_used(data_dir, tmp_path, monkeypatch):
    """The key holds the instruction set of torch's CPU kernels: a warm-up saved under AVX2
    kernels is not the start of a run on AVX512 ones (it trains to other bits there)."""
    features = read_feature_file(feature_path(data_dir, "digits", "pixels"))
    config = dataclasses.replace(BASE, method="gsl").resolved()

    def checkpoints(kernels):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: kernels)
        return Checkpoints.for_run(tmp_path, config, "features", {"type": "cpu"},
                                   {"torch": 1, "faiss": 1})

    avx2, avx512 = checkpoints("AVX2"), checkpoints("AVX512")
    assert avx2.key["kernels"] == "AVX2" and avx2.checkpoint_id(5) != avx512.checkpoint_id(5)
    train(config, features, show_progress=False, checkpoints=avx2)
    assert avx2.load(5) is not None and avx512.load(5) is None
    assert train(config, features, show_progress=False, checkpoints=avx512).started_from is None
    assert train(config, features, show_progress=False, checkpoints=avx2).started_from == {
        "checkpoint": avx2.checkpoint_id(5), "epoch": 5}


def test_a_checkpoint_that_cannot_be_saved_is_a_warning_and_the_run_goes_on(runs, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    checkpoints_dir(results).write_text("not a folder")  # nothing can be saved under it
    base = ["--data-dir", str(runs.data_dir), "--results-dir", str(results)]
    out = CliRunner().invoke(cli, [*base, "train", *CLI_SETTINGS, "--method", "float"])
    assert out.exit_code == 0, out.output
    warnings = [line for line in out.output.splitlines() if line.startswith("gslbench: ")]
    assert warnings and all("the run goes on without saving this checkpoint" in line
                            for line in warnings)
    run = RunDir(Path(out.output.strip().splitlines()[-1]))
    first, second = (torch.load(r.model, weights_only=True)["state_dict"]
                     for r in (run, runs.get("float", False)))
    assert all(torch.equal(first[name], second[name]) for name in first)
