"""The `gslbench` command line: thin click commands over the library's steps, one module per
kind (`steps`, `outputs`, `grids`) on the group of `base`."""

from __future__ import annotations

import signal
import sys
from typing import Any

from gslbench.cli.base import cli
from gslbench.cli.grids import bench, tune
from gslbench.cli.outputs import archive, export, report, search_bench
from gslbench.cli.steps import download, encode, evaluate, features, train

__all__ = ["archive", "bench", "cli", "download", "encode", "evaluate", "export", "features", "main",
           "report", "search_bench", "train", "tune"]


def main() -> None:
    """Console entry point. SIGTERM ends gslbench like Ctrl-C does (temporary files removed,
    bench's workers stopped), with exit status 143."""
    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="gslbench")


def _terminate(signum: int, frame: Any) -> None:
    sys.stderr.write("gslbench: terminated\n")
    raise SystemExit(128 + signum)

