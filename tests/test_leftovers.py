"""Issue 23's small leftovers: a `train --force` killed between its two renames leaves no copy
hidden; `bench --executor ray` prints no Ray INFO line before its error; `bench --dry-run`
refuses the fine-tuning cells that the real bench refuses.

Every failure case asserts exit status 2, one line `gslbench: error: ...` naming the option, no
traceback, and nothing left behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gslbench import layout
from gslbench.cli import cli

TRAIN = ("train", "-d", "digits", "--method", "float", "--epochs", "2")


def invoke(root: Path, *args: str):
    return CliRunner().invoke(cli, ["--data-dir", str(root / "data"),
                                    "--results-dir", str(root / "results"), *args])


def assert_error(result, message: str) -> None:
    """Exit 2, exactly the one line `gslbench: error: MESSAGE`, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"gslbench: error: {message}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """digits features and a short float run: the root holding data/ and results/."""
    root = tmp_path_factory.mktemp("trained")
    for args in (("download", "digits"), ("features", "digits"), TRAIN):
        result = invoke(root, *args)
        assert result.exit_code == 0, result.output
    return root


def killed_between_renames(root: Path) -> tuple[layout.RunDir, int]:
    """A private copy of `root` left as a `train --force` killed between its two renames leaves
    it: the old run moved aside to `.RUN.old/RUN`, the new one complete at `.RUN.new`, nothing at
    RUN. Returns the run and the inode of the new copy's config.json."""
    (run_path,) = (root / "results" / "runs").iterdir()
    run = layout.RunDir(run_path)
    new, old = run.path.parent / f".{run.run_id}.new", run.path.parent / f".{run.run_id}.old"
    shutil.copytree(run.path, new)
    old.mkdir()
    run.path.rename(old / run.run_id)
    os.utime(old / run.run_id / "config.json", ns=(0, 0))  # written before the new run's
    return run, (new / "config.json").stat().st_ino


def hidden(run: layout.RunDir) -> list[Path]:
    return sorted(run.path.parent.glob(f".{run.run_id}.*"))


@pytest.mark.parametrize("force", [False, True], ids=["train", "train --force"])
def test_a_train_after_a_killed_force_restores_the_newest_and_hides_nothing(trained, tmp_path,
                                                                             force):
    shutil.copytree(trained, tmp_path / "w")
    run, new_config = killed_between_renames(tmp_path / "w")
    result = invoke(tmp_path / "w", *TRAIN, *(["--force"] if force else []))
    assert result.exit_code == 0, result.output
    assert "restored from" in result.output and run.config.is_file()
    if not force:  # the new run was put back, not trained a third time
        assert run.config.stat().st_ino == new_config
    assert hidden(run) == []  # the replaced run is not kept hidden for good


@pytest.mark.slow
def test_a_ray_address_that_does_not_parse_is_one_line_without_ray_info(tmp_path):
    pytest.importorskip("ray")
    command = [sys.executable, "-c", "from gslbench.cli import main; main()",
               "--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"),
               "bench", "--methods", "float", "--executor", "ray", "--address",
               "127.0.0.1:notaport"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # Ray's "INFO worker.py ... Connecting" is not there
    assert lines[0].startswith("gslbench: error: cannot start Ray at 127.0.0.1:notaport: ")
    assert result.stdout == "" and not (tmp_path / "data").exists()


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry run", "bench"])
def test_dry_run_refuses_fine_tuning_a_feature_without_a_cnn_as_bench_does(tmp_path, dry_run):
    result = invoke(tmp_path, "bench", "-d", "digits", "--methods", "float", "--train-blocks", "2",
                    *(["--dry-run"] if dry_run else []))
    assert_error(result, "--train-blocks 2 fine-tunes a CNN, but the feature 'pixels' of digits "
                         "comes from pixels; use an efficientnet-lite0 feature")
    assert not (tmp_path / "data").exists() and not (tmp_path / "results" / "runs").exists()


def test_dry_run_refuses_fine_tuning_an_imported_feature_whatever_its_name(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    np.savez(tmp_path / "mine.npz", features=rng.normal(size=(120, 8)), labels=labels)
    result = invoke(tmp_path, "features", "import", "mine", "--from", str(tmp_path / "mine.npz"),
                    "--query-per-class", "5", "--train-per-class", "10",
                    "--feature", "efficientnet-lite0")
    assert result.exit_code == 0, result.output
    (tmp_path / "grid.toml").write_text('dataset = "mine"\nmethod = ["float"]\ntrain_blocks = 1\n')
    result = invoke(tmp_path, "bench", str(tmp_path / "grid.toml"), "--dry-run")
    assert_error(result, f"{tmp_path / 'grid.toml'}: --train-blocks 1 fine-tunes a CNN, but the "
                         "feature 'efficientnet-lite0' of mine comes from imported; use an "
                         "efficientnet-lite0 feature")
