"""Fixtures shared by the data and download tests."""

from __future__ import annotations

import pytest
from datafakes import FileServer


@pytest.fixture
def server():
    """A local HTTP server on 127.0.0.1 (Range requests, injectable faults) for the whole test."""
    with FileServer() as running:
        yield running


@pytest.fixture(scope="session")
def digits_runs(tmp_path_factory):
    """A short digits float run and two-step PQ run (16 bits), trained and encoded through the
    CLI: (root, {"float": run dir, "pq": run dir}); root holds data/ and results/."""
    from click.testing import CliRunner

    from gslbench.cli import cli

    root = tmp_path_factory.mktemp("digits_runs")
    base = ["--data-dir", str(root / "data"), "--results-dir", str(root / "results"), "-q"]

    def invoke(*args):
        result = CliRunner().invoke(cli, [*base, *args])
        assert result.exit_code == 0, result.output
        return result.output.strip()

    invoke("download", "digits")
    invoke("features", "digits")
    runs = {}
    for method in ("float", "two-step"):
        run = invoke("train", "-d", "digits", "--method", method, "--quantizer", "pq", "--bits",
                     "16", "--epochs", "3", "--warmup-epochs", "1")
        invoke("encode", run)
        runs["float" if method == "float" else "pq"] = run
    return root, runs
