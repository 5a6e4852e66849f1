"""End to end through the CLI on digits, and the one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from tampering import forged_h5

from gslbench.cli import cli
from gslbench.data.featurefile import read_feature_file


def invoke(tmp_path, *args):
    runner = CliRunner()
    data, results = tmp_path / "data", tmp_path / "results"
    return runner.invoke(cli, ["--data-dir", str(data), "--results-dir", str(results), *args])


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    result = invoke(root, "-q", "bench")
    assert result.exit_code == 0, result.output
    return root, result.output


def prepare_digits(tmp_path):
    for step in ("download", "features"):
        result = invoke(tmp_path, step, "digits")
        assert result.exit_code == 0, result.output


def run_dirs(root):
    return sorted(p for p in (root / "results" / "runs").iterdir() if not p.name.startswith("."))


@pytest.mark.slow
def test_bench_writes_every_file_and_reasonable_maps(bench_dir):
    root, output = bench_dir
    runs = run_dirs(root)
    assert len(runs) == 1 + 6 * 3  # one float ceiling, six quantized methods x three code lengths
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        assert config["run"] == run.name and config["features_sha256"] and config["versions"]["torch"]
        torch.load(run / "model.pt", weights_only=True)
        log = pd.read_csv(run / "train_log.csv")
        assert list(log.columns[:3]) == ["epoch", "sim_loss", "quant_mse"] and len(log) == 40
        metrics = json.loads((run / "metrics.json").read_text())
        assert 0 < metrics["map"] <= 1
        with h5py.File(run / "codes.h5") as codes:
            assert codes["codes"].dtype == np.uint8 and len(codes["codes"]) == 1697
        if config["config"]["method"] == "float":
            assert metrics["map"] > 0.5
        else:
            assert (run / "quantizer.h5").is_file()
            assert codes_bits(run) == config["config"]["bits"]
    report = root / "results" / "report"
    results = pd.read_csv(report / "results.csv")
    assert len(results) == 19 and results["map"].between(0, 1, inclusive="right").all()
    tables = (report / "tables.md").read_text()
    assert "16 bits" in tables and "gsl" in tables and tables.strip() in output
    assert (report / "map_vs_bits.png").read_bytes()[:4] == b"\x89PNG"


def codes_bits(run):
    with h5py.File(run / "codes.h5") as codes:
        return int(codes.attrs["code_bits"])


@pytest.mark.slow
def test_bench_again_skips_finished_runs(bench_dir):
    root, _ = bench_dir
    before = {p.name: (p / "metrics.json").stat().st_mtime_ns for p in run_dirs(root)}
    result = invoke(root, "-q", "bench")
    assert result.exit_code == 0, result.output
    after = {p.name: (p / "metrics.json").stat().st_mtime_ns for p in run_dirs(root)}
    assert before == after


def test_digits_protocol(tmp_path):
    assert invoke(tmp_path, "download", "digits").exit_code == 0
    result = invoke(tmp_path, "features", "digits")
    assert result.exit_code == 0, result.output
    features = read_feature_file(tmp_path / "data" / "digits" / "pixels.h5")
    assert (len(features.query.indices), len(features.train.indices),
            len(features.database.indices)) == (100, 500, 1697)
    assert set(features.train.indices) <= set(features.database.indices)
    assert not set(features.query.indices) & set(features.database.indices)
    assert (features.query.labels.sum(0) == 10).all() and (features.train.labels.sum(0) == 50).all()
    assert (features.database.labels.sum(1) == 1).all()


def test_same_config_and_seed_give_the_same_codes(tmp_path):
    prepare_digits(tmp_path)
    args = ["train", "--method", "gsl", "--bits", "16", "--epochs", "8", "--warmup-epochs", "2",
            "--epochs-per-refit", "2"]
    run = invoke(tmp_path, *args).output.strip().splitlines()[-1]
    assert invoke(tmp_path, "encode", run).exit_code == 0
    with h5py.File(f"{run}/codes.h5") as handle:
        first = handle["codes"][()]
    again = invoke(tmp_path, *args, "--force").output.strip().splitlines()[-1]
    assert again == run
    assert invoke(tmp_path, "encode", run, "--force").exit_code == 0
    with h5py.File(f"{run}/codes.h5") as handle:
        np.testing.assert_array_equal(handle["codes"][()], first)


def test_help_lists_every_step_with_an_example(tmp_path):
    result = invoke(tmp_path, "--help")
    for command in ("download", "features", "train", "encode", "evaluate", "report", "bench"):
        assert command in result.output
        sub = invoke(tmp_path, command, "--help")
        assert sub.exit_code == 0 and "Example: gslbench" in sub.output


def assert_user_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gslbench: error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_run_directory(tmp_path):
    assert_user_error(invoke(tmp_path, "encode", str(tmp_path / "nope")), "nope", "no such run")
    assert_user_error(invoke(tmp_path, "evaluate", "abcdef"), "abcdef")


def test_unknown_dataset(tmp_path):
    assert_user_error(invoke(tmp_path, "download", "imagenet"), "imagenet", "digits")
    assert_user_error(invoke(tmp_path, "train", "-d", "imagenet"), "imagenet")


def test_bits_not_a_multiple_of_sub_bits(tmp_path):
    assert_user_error(invoke(tmp_path, "train", "--bits", "30"), "--bits 30", "--sub-bits 8")


def test_feature_file_with_wrong_shapes(tmp_path):
    prepare_digits(tmp_path)
    path = tmp_path / "data" / "digits" / "pixels.h5"
    with forged_h5(path) as handle:
        del handle["query/labels"]
        handle["query/labels"] = np.zeros((7, 10), np.uint8)
    assert_user_error(invoke(tmp_path, "train"), str(path), "/query")


def test_truncated_feature_file(tmp_path):
    prepare_digits(tmp_path)
    path = tmp_path / "data" / "digits" / "pixels.h5"
    path.write_bytes(path.read_bytes()[:5000])
    assert_user_error(invoke(tmp_path, "train"), str(path), "corrupt or truncated")


def test_evaluate_before_encode_and_report_on_nothing(tmp_path):
    assert_user_error(invoke(tmp_path, "train"), "pixels.h5", "gslbench features digits")
    prepare_digits(tmp_path)
    run = invoke(tmp_path, "train", "--method", "float", "--epochs", "2", "--warmup-epochs", "0")
    assert run.exit_code == 0, run.output
    assert_user_error(invoke(tmp_path, "evaluate", run.output.strip()), "codes.h5", "encode")
    unevaluated = invoke(tmp_path, "report")
    assert unevaluated.exit_code == 2 and "without metrics.json: " + Path(run.output.strip()).name \
        in unevaluated.output
    assert_user_error(invoke(tmp_path / "empty", "report"), "no evaluated runs")


@pytest.mark.parametrize("quantizer", ["opq", "rq", "lsq"])
def test_every_quantizer_trains_encodes_and_evaluates(tmp_path, quantizer):
    prepare_digits(tmp_path)
    args = ["train", "--method", "gsl", "--quantizer", quantizer, "--bits", "16", "--epochs", "4",
            "--warmup-epochs", "1", "--epochs-per-refit", "2"]
    result = invoke(tmp_path, *args)
    assert result.exit_code == 0, result.output
    run = result.output.strip().splitlines()[-1]
    assert invoke(tmp_path, "encode", run).exit_code == 0
    assert invoke(tmp_path, "evaluate", run).exit_code == 0
    metrics = json.loads((Path(run) / "metrics.json").read_text())
    assert 0.3 < metrics["map"] <= 1
    with h5py.File(f"{run}/codes.h5") as handle:
        assert handle.attrs["quantizer"] == quantizer and handle["codes"].shape == (1697, 2)


def test_bench_over_four_quantizers_gives_one_table_each(tmp_path):
    result = invoke(tmp_path, "-q", "bench", "--methods", "two-step,gsl", "--quantizers",
                    "pq,opq,rq,lsq", "--bits", "16", "--epochs", "3", "--warmup-epochs", "1")
    assert result.exit_code == 0, result.output
    for quantizer in ("PQ", "OPQ", "RQ", "LSQ"):
        assert f"## digits (pixels), {quantizer}, 256-word codebooks, pairwise loss" in result.output
    assert len(run_dirs(tmp_path)) == 8


def test_bench_rejects_an_unknown_method_before_fetching_anything(tmp_path):
    assert_user_error(invoke(tmp_path, "bench", "--methods", "float,sgd"), "unknown method 'sgd'")
    assert not (tmp_path / "data").exists()
