"""Fixtures shared by several test modules."""

from __future__ import annotations

import fcntl
import os

import pytest

# No installed plugin (a method, quantizer or data set of another package) changes the suite's
# registries, default grid or imports, here or in the processes the tests start: set before
# gslbench is first imported. tests/test_plugins.py installs its own and clears it in the
# processes that use them.
os.environ["GSLBENCH_DISABLE_PLUGINS"] = "1"

from datafakes import FileServer  # noqa: E402

from gslbench.threads import limit_threads  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """One torch and one faiss thread for a module's tests: faiss's OpenMP threads stall when
    other processes share the cores (10x slower on a busy 2-core machine), and small torch
    batches run fastest on one thread; it keeps the tests fast and deterministic."""
    with limit_threads(1):
        yield


@pytest.fixture
def one_ray_at_a_time(tmp_path_factory):
    """The tests that start Ray instances take turns: `make test` runs the suite in two
    pytest-xdist workers, which share the base temporary folder's parent, and two local Ray
    clusters starting at once would compete for ports and for the cores their nodes claim."""
    with open(tmp_path_factory.getbasetemp().parent / "ray.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


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
