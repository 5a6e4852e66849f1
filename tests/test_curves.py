"""train/bench --tensorboard: the training curves written as TensorBoard event files, read back
with TensorBoard's own EventAccumulator and compared with the run's train_log.csv."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gslbench.cli import cli

TINY = ["--bits", "16", "--epochs", "4", "--warmup-epochs", "1", "--epochs-per-refit", "1"]


def invoke(root: Path, *args: str):
    return CliRunner().invoke(cli, ["--data-dir", str(root / "data"), "--results-dir",
                                    str(root / "results"), "-q", *args])


def read_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of the event files in `folder`, as TensorBoard reads them."""
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="the tensorboard extra is not installed (pip install 'gslbench[tensorboard]')")
    events = accumulator.EventAccumulator(str(folder))
    events.Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)}
            for tag in events.Tags()["scalars"]}


def assert_curves_match_the_log(folder: Path, run: Path, quantized: bool) -> None:
    scalars = read_scalars(folder)
    log = pd.read_csv(run / "train_log.csv")
    expected = {"loss/similarity": "sim_loss"}
    if quantized:
        expected |= {"quantization/mse": "quant_mse", "quantization/mse_refit": "quant_mse_refit"}
    assert set(scalars) == set(expected)
    for tag, column in expected.items():
        present = log.dropna(subset=[column])
        assert sorted(scalars[tag]) == present.epoch.tolist(), tag
        np.testing.assert_allclose([scalars[tag][epoch] for epoch in present.epoch],
                                   present[column], rtol=1e-6)  # stored as float32


@pytest.mark.slow
def test_train_writes_its_curves_for_tensorboard(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed "
                                              "(pip install 'gslbench[tensorboard]')")
    boards = tmp_path / "boards"
    result = invoke(tmp_path, "train", "--method", "gsl", *TINY, "--tensorboard", str(boards))
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip())
    assert [p.name for p in boards.iterdir()] == [run.name]
    assert_curves_match_the_log(boards / run.name, run, quantized=True)
    scalars = read_scalars(boards / run.name)
    assert sorted(scalars["loss/similarity"]) == [1, 2, 3, 4]
    assert sorted(scalars["quantization/mse_refit"]) == [1, 2, 3, 4]  # a refit after each epoch
    again = invoke(tmp_path, "train", "--method", "gsl", *TINY, "--tensorboard", str(boards))
    assert again.exit_code == 0, again.output  # the run is reused; its curves written afresh
    assert len(list((boards / run.name).iterdir())) == 1


def test_tensorboard_without_the_extra_is_a_one_line_error_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    for command in (["train", "--method", "float"], ["bench", "--methods", "float"]):
        result = invoke(tmp_path, *command, "--tensorboard", str(tmp_path / "boards"))
        assert result.exit_code == 2, result.output
        assert result.output.strip() == ("gslbench: error: --tensorboard: the tensorboard package "
                                         "is not installed (pip install 'gslbench[tensorboard]')")
    assert not (tmp_path / "results").exists() and not (tmp_path / "boards").exists()


@pytest.mark.slow
def test_bench_writes_the_curves_of_every_run(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed "
                                              "(pip install 'gslbench[tensorboard]')")
    boards = tmp_path / "boards"
    result = invoke(tmp_path, "bench", "--methods", "float,qloss", "--quantizers", "pq",
                    "--seeds", "0", "--codebooks", "train", *TINY, "--tensorboard", str(boards))
    assert result.exit_code == 0, result.output
    runs = sorted(p for p in (tmp_path / "results" / "runs").iterdir()
                  if not p.name.startswith("."))
    assert sorted(p.name for p in boards.iterdir()) == [run.name for run in runs] and len(runs) == 2
    for run in runs:
        quantized = '"method": "float"' not in (run / "config.json").read_text()
        assert_curves_match_the_log(boards / run.name, run, quantized)
