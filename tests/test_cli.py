"""End to end through the CLI on digits, and the one-line errors for bad input."""

from __future__ import annotations

import importlib.metadata
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from tampering import forged_h5

from gslbench import layout
from gslbench.bench.grid import Cells
from gslbench.bench.progress import Progress, elide
from gslbench.cli import cli
from gslbench.config import RunConfig
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
    return root, result.stdout


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
    assert len(runs) == 1 + 10 * 3  # one float ceiling, ten quantized methods x three code lengths
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        assert config["run"] == run.name and config["features_sha256"] and config["versions"]["torch"]
        torch.load(run / "model.pt", weights_only=True)
        log = pd.read_csv(run / "train_log.csv")
        trained = config["config"]["method"] != "pca"  # pca trains nothing: one row, epoch 0
        assert list(log.columns[:3]) == ["epoch", "sim_loss", "quant_mse"]
        assert len(log) == (40 if trained else 1)
        metrics = json.loads((run / "metrics.json").read_text())
        assert 0 < metrics["map"] <= 1
        with h5py.File(run / "codes.h5") as codes:
            assert codes["codes"].dtype == np.uint8 and len(codes["codes"]) == 1337
        if config["config"]["method"] == "float":
            assert metrics["map"] > 0.5
        else:
            assert (run / "quantizer.h5").is_file()
            assert codes_bits(run) == config["config"]["bits"]
            database = json.loads((run / "metrics-database.json").read_text())
            assert database["codebooks"] == "database" and 0 < database["map"] <= 1
    report = root / "results" / "report"
    results = pd.read_csv(report / "results.csv")
    # float once, each quantized run with both codebook fits (bench's default)
    assert len(results) == 1 + 30 * 2 and results["map"].between(0, 1, inclusive="right").all()
    tables = (report / "tables.md").read_text()
    assert "16 bits" in tables and "gsl" in tables
    assert output == f"{report / 'index.html'}\n"  # -q: the report's path alone
    figures = list(report.glob("*.png"))  # one per table set
    assert figures and all(png.read_bytes()[:4] == b"\x89PNG" for png in figures)


def found_section(tables: str) -> str:
    """The `## What it found` section of a report's tables.md, up to the next section."""
    start = tables.index("## What it found")
    return tables[start:tables.index("\n## ", start)]


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
            len(features.database.indices)) == (100, 500, 1337)
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


def test_train_prepares_a_missing_default_feature_file_as_the_api_does(tmp_path):
    """No download, no features: train fetches and extracts the default feature file (as
    `train()` and bench do); a missing feature of another name is still a one-line error."""
    assert_user_error(invoke(tmp_path, "train", "--feature", "vgg"), "vgg.h5",
                      "gslbench features digits --backbone")
    assert not (tmp_path / "data" / "digits" / "pixels.h5").exists()
    run = invoke(tmp_path, "-q", "train", "--method", "float", "--epochs", "2", "--warmup-epochs", "0")
    assert run.exit_code == 0, run.output
    assert (tmp_path / "data" / "digits" / "pixels.h5").is_file()
    assert (Path(run.output.strip()) / "model.pt").is_file()


def test_evaluate_before_encode_and_report_on_nothing(tmp_path):
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
        assert handle.attrs["quantizer"] == quantizer and handle["codes"].shape == (1337, 2)


@pytest.mark.slow
def test_bench_over_four_quantizers_gives_one_table_each(tmp_path):
    # one method and one codebook fit: a table per quantizer needs no more (half the runs, a
    # quarter of the encodes of two methods and both fits)
    result = invoke(tmp_path, "bench", "--methods", "gsl", "--quantizers", "pq,opq,rq,lsq",
                    "--bits", "16", "--codebooks", "train", "--epochs", "3", "--warmup-epochs", "1")
    assert result.exit_code == 0, result.output
    report = tmp_path / "results" / "report"
    tables = (report / "tables.md").read_text()
    for quantizer in ("PQ", "OPQ", "RQ", "LSQ"):
        title = f"digits (pixels), {quantizer}, 256-word codebooks, pairwise loss"
        assert f"## {title}" in tables and f"### {title}" in result.stdout  # in what it found
    # what it found (not the whole tables.md) and the path, as `gslbench report` prints them
    found = found_section(tables)
    assert result.stdout == f"{found.strip()}\n\nreport written to {report / 'index.html'}\n"
    assert len(run_dirs(tmp_path)) == 4


def test_bench_rejects_an_unknown_method_before_fetching_anything(tmp_path):
    assert_user_error(invoke(tmp_path, "bench", "--methods", "float,sgd"), "unknown method 'sgd'")
    assert not (tmp_path / "data").exists()


# --- a command line that starts fast, and its polish ----------------------------------------

REPOSITORY = Path(__file__).resolve().parent.parent
# runs the command line, then reports on stderr which of torch and faiss it imported
IMPORT_GUARD = """
import sys
from gslbench.cli import main
try:
    main()
finally:
    sys.stderr.write(f"\\nloaded: {sorted(n for n in ('torch', 'faiss') if n in sys.modules)}\\n")
"""


def command(root, *args, env=None):
    """gslbench ARGS in a new process under the import guard, on ROOT's data and results."""
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), **(env or {})}
    return subprocess.run([sys.executable, "-c", IMPORT_GUARD, "--data-dir", str(root / "data"),
                           "--results-dir", str(root / "results"), *args],
                          capture_output=True, text=True, env=env, cwd=root)


def loaded(done):
    return done.stderr.strip().splitlines()[-1]


def test_importing_the_command_line_loads_neither_torch_nor_faiss():
    code = "import gslbench.cli, sys; assert 'torch' not in sys.modules and 'faiss' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={**os.environ, "PYTHONPATH": str(REPOSITORY)})


@pytest.mark.slow
def test_help_version_download_report_and_a_dry_run_load_neither(digits_runs, tmp_path):
    root, runs = digits_runs
    assert invoke(root, "evaluate", runs["pq"]).exit_code == 0
    assert invoke(root, "evaluate", runs["float"]).exit_code == 0
    grid = tmp_path / "grid.toml"
    # cells not run yet: the grid's checks and the cells' states (a cell with codes reads them,
    # quantizer included, which loads faiss)
    grid.write_text('method = ["qloss", "gsl"]\nquantizer = "pq"\nbits = 16\nepochs = 3\n'
                    "warmup_epochs = 1\n")
    for args in (["--help"], ["--version"], ["download", "digits"],
                 ["report", "--out", str(tmp_path / "report")], ["bench", str(grid), "--dry-run"],
                 ["bench", "--methods", "gls", "--dry-run"]):
        done = command(root, *args)
        assert loaded(done) == "loaded: []", (args, done.stderr)
        assert done.returncode == (2 if "gls" in args else 0), done.stderr
    done = command(root, "--version")
    assert done.stdout == f"gslbench {importlib.metadata.version('gslbench')}\n"
    assert "\n2 cells: 0 done, 0 partial (trained, not evaluated), 2 todo\nestimate: " in command(
        root, "bench", str(grid), "--dry-run").stdout
    assert command(root, "evaluate", runs["pq"], "--force").stderr.strip().endswith(
        "loaded: ['faiss', 'torch']")  # a step loads them when it runs


def test_commands_are_listed_in_pipeline_order_with_whole_summaries(tmp_path):
    output = invoke(tmp_path, "--help").output
    summaries: dict[str, str] = {}  # name -> its summary, continuation lines joined
    for line in output[output.index("Commands:"):].splitlines()[1:]:
        if line[2:3].strip():
            name, _, text = line.strip().partition(" ")
            summaries[name] = text.strip()
        elif line.strip():
            summaries[name] += " " + line.strip()
    assert list(summaries) == ["download", "features", "train", "encode", "evaluate", "report",
                               "bench", "tune", "search-bench", "export", "archive"]
    for name, summary in summaries.items():  # each the command's first sentence, whole
        assert summary == " ".join(cli.commands[name].help.split("\n\n")[0].split()), name
        assert "..." not in summary


def test_every_option_has_help_text():
    def commands(group, path=()):
        for name, sub in group.commands.items():
            yield (*path, name), sub
            if isinstance(sub, click.Group):
                yield from commands(sub, (*path, name))

    missing = [(" ".join(path), param.name) for path, sub in commands(cli)
               for param in sub.params if isinstance(param, click.Option) and not param.help]
    assert not missing


@pytest.mark.parametrize("args, suggestion", [
    (["train", "--method", "gls"], "did you mean 'gsl'?"),
    (["train", "--quantizer", "oqp"], "did you mean 'opq'?"),
    (["train", "--quantizer", "qp"], "did you mean 'pq'?"),  # letters swapped
    (["bench", "--quantizers", "pq,qp", "--dry-run"], "did you mean 'pq'?"),
    (["bench", "--methods", "two-step,gumbl", "--dry-run"], "did you mean 'gumbel'?"),
    (["bench", "--quantizers", "rqq", "--dry-run"], "did you mean 'rq'?"),
    (["download", "digts"], "did you mean 'digits'?"),
    (["bench", "-d", "fashion_mnist", "--dry-run"], "did you mean 'fashion-mnist'?"),
    (["bench", "GRID", "--dry-run"], "unknown key 'methods' (did you mean 'method'?)"),
])
def test_unknown_names_suggest_the_closest(tmp_path, args, suggestion):
    (tmp_path / "grid.toml").write_text('methods = ["gsl"]\n')
    args = [str(tmp_path / "grid.toml") if arg == "GRID" else arg for arg in args]
    assert_user_error(invoke(tmp_path, *args), suggestion)


@pytest.mark.parametrize("args, message", [
    (["--quantizers", "qp"], "--quantizers: unknown quantizer 'qp'"),
    (["--methods", "float,gls"], "--methods: unknown method 'gls'"),
    (["--bits", "16,0"], "--bits 0 is outside [1, "),
    (["--seeds", "-1"], "--seeds -1 is outside [0, "),
])
def test_bench_errors_name_the_option_as_typed(tmp_path, args, message):
    result = invoke(tmp_path, "bench", *args, "--dry-run")
    assert_user_error(result, message)
    assert "--quantizer:" not in result.output and "--seed " not in result.output


def test_run_ids_accept_a_unique_prefix_as_git_does(tmp_path):
    runs = tmp_path / "results" / "runs"
    for run_id in ("ab12cd34ef56", "ab12ff000000", "c0ffee000000"):
        (runs / run_id).mkdir(parents=True)
        (runs / run_id / "config.json").write_text("{}")
    (runs / ".c0ffee111111.tmp").mkdir()  # a staging directory is never a candidate
    assert layout.resolve_run(tmp_path / "results", "c0f").path == runs / "c0ffee000000"
    assert layout.resolve_run(tmp_path / "results", "ab12c").run_id == "ab12cd34ef56"
    assert layout.resolve_run(tmp_path / "results", "ab12ff000000").run_id == "ab12ff000000"
    # the prefix resolves on the command line too: evaluate then asks for the run's codes
    assert_user_error(invoke(tmp_path, "evaluate", "c0f"), "c0ffee000000", "codes.h5")
    assert_user_error(invoke(tmp_path, "encode", "ab12"), "ab12: ambiguous run id prefix",
                      "2 runs match: ab12cd34ef56, ab12ff000000")
    assert_user_error(invoke(tmp_path, "evaluate", "ab13"), "ab13: no such run directory")
    assert_user_error(invoke(tmp_path, "evaluate", ""), "no such run directory")


@pytest.mark.slow
def test_report_prints_what_it_found_and_the_path(digits_runs, tmp_path):
    """Not the whole tables.md: its verdict section and index.html's path; -q: the path alone."""
    root, runs = digits_runs
    for run in runs.values():
        assert invoke(root, "evaluate", run).exit_code == 0
    out = tmp_path / "report"
    result = invoke(root, "report", "--out", str(out), *runs.values())
    assert result.exit_code == 0, result.output
    tables = (out / "tables.md").read_text()
    found = found_section(tables)
    assert found.count("\n") > 2 and "## Settings" not in result.stdout
    assert result.stdout == f"{found.strip()}\n\nreport written to {out / 'index.html'}\n"
    quiet = invoke(root, "-q", "report", "--out", str(out), *runs.values())
    assert quiet.exit_code == 0 and quiet.stdout == f"{out / 'index.html'}\n"


def test_no_suggestion_when_nothing_is_close(tmp_path):
    result = invoke(tmp_path, "train", "--method", "sgd")
    assert_user_error(result, "'sgd'")
    assert "did you mean" not in result.output


def test_evaluate_prints_the_headline_numbers_then_the_path(digits_runs):
    root, runs = digits_runs
    for name in ("pq", "float"):
        result = invoke(root, "evaluate", runs[name])
        assert result.exit_code == 0, result.output
        headline, path = result.output.strip().splitlines()
        metrics = json.loads(Path(path).read_text())
        expected = [f"mAP {metrics['map']:.4f}", *(f"mAP@{k} {metrics['map_at'][k]:.4f}"
                                                   for k in ("100", "1000"))]
        if name == "pq":
            expected.append(f"database quantization error {metrics['quant_mse']['database']:.4g}")
        assert headline == f"{metrics['run']} {metrics['label']}: " + ", ".join(expected)


def test_search_bench_prints_its_headline_numbers_then_the_path(digits_runs):
    root, runs = digits_runs
    result = invoke(root, "search-bench", runs["pq"], "--threads", "1", "--single-queries", "20",
                    "--repeats", "1", "--k", "20", "--recall-at", "1,10", "--force")
    assert result.exit_code == 0, result.output
    headline, path = result.output.strip().splitlines()
    record = json.loads(Path(path).read_text())
    codes, exact = record["indexes"]["codes"], record["indexes"]["float"]
    assert headline == (
        f"{record['run']} {record['label']}: codes {codes['bytes_per_vector']} B/vector, "
        f"{codes['qps_batched']:.0f} QPS batched, {codes['qps_batch1']:.0f} QPS at batch 1, "
        f"recall@1 {codes['recall_at']['1']:.3f}, recall@10 {codes['recall_at']['10']:.3f} "
        f"(exact float: {exact['bytes_per_vector']} B/vector, {exact['qps_batched']:.0f} QPS "
        f"batched, {exact['qps_batch1']:.0f} QPS at batch 1, recall@1 1.000, recall@10 1.000)")


@pytest.mark.slow
def test_train_off_a_terminal_logs_a_line_per_refit(digits_runs, tmp_path):
    root, _ = digits_runs
    shutil.copytree(root / "data", tmp_path / "data")
    done = command(tmp_path, "train", "--method", "qloss", "--bits", "16", "--epochs", "5",
                   "--warmup-epochs", "1", "--epochs-per-refit", "2")
    assert done.returncode == 0, done.stderr
    log = pd.read_csv(Path(tmp_path / done.stdout.strip()) / "train_log.csv")
    lines = [line for line in done.stderr.splitlines() if line.startswith("gslbench: train ")]
    assert lines == [f"gslbench: train qloss λ=2.7: epoch {row.epoch}/5, sim loss {row.sim_loss:.4f}, "
                     f"quant mse {row.quant_mse_refit:.4g}"
                     for row in log.itertuples() if row.epoch in (1, 3, 5)]
    quiet = command(tmp_path, "-q", "train", "--method", "qloss", "--bits", "16", "--epochs", "5",
                    "--warmup-epochs", "1", "--epochs-per-refit", "2", "--force")
    assert "gslbench: train" not in quiet.stderr


def test_a_long_cell_label_is_shortened_in_the_middle():
    label = "0123456789ab digits gsl α=1 k=8 select=aligned pq 32 bits seed 0; " * 4
    short = elide(label, 60)
    assert len(short) == 60 and short.startswith(label[:29]) and short.endswith(label[-30:])
    assert "…" in short and elide("short", 60) == "short"


def test_bench_log_lines_never_overwrite_its_progress_bar(monkeypatch):
    """The first log line (the cell count) is written once the bar hands logging to tqdm.write,
    which clears the bar's line first: it starts a line of its own."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("gslbench: %(message)s"))
    root_logger = logging.getLogger()
    monkeypatch.setattr(root_logger, "handlers", [handler])
    monkeypatch.setattr(root_logger, "level", logging.INFO)
    grid = Cells((RunConfig(method="two-step"), RunConfig(method="gsl")))
    with Progress(2, 0, grid, bar=True) as progress:
        progress.finished(RunConfig(method="two-step"), None)
    text = stream.getvalue()
    before = text[:text.index("gslbench: 2 cells: 0 done already, 2 to run")]
    assert before == "" or before[-1] in "\r\n", repr(text)
