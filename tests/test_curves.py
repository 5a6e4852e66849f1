"""train/bench --tensorboard: the training curves written as TensorBoard event files, read back
with TensorBoard's own EventAccumulator and compared with the run's train_log.csv."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gslbench import api
from gslbench.cli import cli
from gslbench.errors import GslbenchError

TINY = ["--bits", "16", "--epochs", "4", "--warmup-epochs", "1", "--epochs-per-refit", "1"]


def invoke(root: Path, *args: str):
    return CliRunner().invoke(cli, ["--data-dir", str(root / "data"), "--results-dir",
                                    str(root / "results"), "-q", *args])


def read_events(folder: Path):
    """The event files in `folder`, loaded by TensorBoard's own EventAccumulator."""
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="the tensorboard extra is not installed (pip install 'gslbench[tensorboard]')")
    events = accumulator.EventAccumulator(str(folder))
    events.Reload()
    return events


def read_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of the event files in `folder`, as TensorBoard reads them."""
    events = read_events(folder)
    return {tag: {event.step: event.value for event in events.Scalars(tag)}
            for tag in events.Tags()["scalars"]}


def read_tags(folder: Path) -> dict[str, list[str]]:
    """Every tag of the event files in `folder` by kind (scalars, tensors: the text entry)."""
    return {kind: sorted(tags) for kind, tags in read_events(folder).Tags().items()
            if isinstance(tags, list) and tags}


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


def test_the_api_checks_tensorboard_as_the_cli_does(tmp_path, monkeypatch):
    """The extra missing: a one-line error naming the parameter before anything runs; a file
    given as the folder: refused as --tensorboard's click.Path refuses it."""
    folders = {"data_dir": tmp_path / "data", "results_dir": tmp_path / "results"}
    (tmp_path / "file").write_text("")
    for step in (lambda **given: api.train(method="float", **folders, **given),
                 lambda **given: api.bench({"method": "float"}, **folders, **given)):
        with pytest.raises(GslbenchError) as caught:
            step(tensorboard=tmp_path / "file")
        assert str(caught.value) == f"{tmp_path / 'file'}: not a folder (tensorboard)"
        monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
        with pytest.raises(GslbenchError) as caught:
            step(tensorboard=tmp_path / "boards")
        assert str(caught.value) == ("tensorboard: the tensorboard package is not installed "
                                     "(pip install 'gslbench[tensorboard]')")
        monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing prepared or trained


@pytest.mark.slow
def test_the_api_writes_the_curves_the_cli_writes(tmp_path, one_thread):
    """train(tensorboard=...) and bench(tensorboard=...) write the tags and values that `train
    --tensorboard` writes for the same run."""
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed "
                                              "(pip install 'gslbench[tensorboard]')")
    folders = {"data_dir": tmp_path / "data", "results_dir": tmp_path / "results"}
    settings = {"method": "gsl", "bits": 16, "epochs": 4, "warmup_epochs": 1,
                "epochs_per_refit": 1}  # TINY
    run = api.train(**folders, **settings, tensorboard=tmp_path / "api")
    assert [p.name for p in (tmp_path / "api").iterdir()] == [run.name]
    assert_curves_match_the_log(tmp_path / "api" / run.name, run, quantized=True)
    result = invoke(tmp_path, "train", "--method", "gsl", *TINY, "--tensorboard",
                    str(tmp_path / "cli"))  # the same run, reused
    assert result.exit_code == 0 and Path(result.stdout.strip()) == run, result.output
    cli_board, api_board = tmp_path / "cli" / run.name, tmp_path / "api" / run.name
    assert read_tags(api_board) == read_tags(cli_board)
    assert read_tags(cli_board) == {"scalars": sorted(["loss/similarity", "quantization/mse",
                                                       "quantization/mse_refit"]),
                                    "tensors": ["source/text_summary"]}
    assert read_scalars(api_board) == read_scalars(cli_board)

    api.bench({**settings, "method": ["float", "gsl"], "codebooks": "train"}, **folders,
              tensorboard=tmp_path / "bench")
    runs = sorted(p for p in (tmp_path / "results" / "runs").iterdir() if not p.name.startswith("."))
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == [r.name for r in runs]
    assert len(runs) == 2 and run in runs
    assert read_tags(tmp_path / "bench" / run.name) == read_tags(cli_board)
    assert read_scalars(tmp_path / "bench" / run.name) == read_scalars(cli_board)
    for other in runs:
        quantized = '"method": "float"' not in (other / "config.json").read_text()
        assert_curves_match_the_log(tmp_path / "bench" / other.name, other, quantized)
