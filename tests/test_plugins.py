"""Plugins: a package installed with pip (tests/plugin_pkg: the `damped` method and the
`coarse-pq` quantizer, declared as entry points) is used like a built-in by the command line;
bad plugins are one warning line each; the test kit (`gslbench.testing`) passes a good method and
catches a broken one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import gslbench
from gslbench.cli import cli
from gslbench.config import RunConfig
from gslbench.methods import METHODS
from gslbench.methods.base import Method
from gslbench.plugins import DISABLE
from gslbench.testing import check_gradients_flow, check_method

PLUGIN_PACKAGE = Path(__file__).parent / "plugin_pkg"
REPOSITORY = Path(gslbench.__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """tests/plugin_pkg installed by pip into a folder of its own (a copy is built: the build
    writes beside its sources), never into the test environment itself."""
    work = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(PLUGIN_PACKAGE, work / "source")
    site = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(site), str(source)],
                   check=True, capture_output=True)
    return site


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    for step in ("download", "features"):
        result = CliRunner().invoke(cli, ["--data-dir", str(root / "data"), step, "digits"])
        assert result.exit_code == 0, result.output
    return root


def plugin_environment(site: Path) -> dict[str, str]:
    """The environment of a process that sees the packages under `site` and loads plugins (the
    suite's conftest disables them everywhere else)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(site)])}
    env.pop(DISABLE)
    return env


def gslbench_command(site: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m gslbench --data-dir ROOT/data --results-dir ROOT/results ARGS` in a new
    process that sees the packages under `site` (as an installed plugin is seen)."""
    env = plugin_environment(site)
    return subprocess.run([sys.executable, "-m", "gslbench", "--data-dir", str(root / "data"),
                           "--results-dir", str(root / "results"), *args],
                          capture_output=True, text=True, env=env, cwd=root)


@pytest.mark.slow
def test_a_plugin_method_and_quantizer_train_with_their_knobs_as_options(plugin_site,
                                                                         digits_root):
    help_text = gslbench_command(plugin_site, digits_root, "train", "--help").stdout
    assert "damped" in help_text and "coarse-pq" in help_text and "--damped-gamma" in help_text
    done = gslbench_command(plugin_site, digits_root, "-q", "train", "--method", "damped",
                            "--damped-gamma", "0.25", "--quantizer", "coarse-pq", "--bits", "16",
                            "--epochs", "3", "--warmup-epochs", "1")
    assert done.returncode == 0, done.stderr
    run = digits_root / done.stdout.strip()
    config = json.loads((run / "config.json").read_text())["config"]
    assert (config["method"], config["quantizer"], config["damped_gamma"]) == ("damped",
                                                                              "coarse-pq", 0.25)
    assert "gsl_alpha" not in config  # only the run's own method's knobs
    for step in ("encode", "evaluate"):
        done = gslbench_command(plugin_site, digits_root, step, str(run))
        assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{run.name} damped γ=0.25: mAP ")


@pytest.mark.slow
def test_a_bench_grid_takes_the_plugin_knob_as_an_axis(plugin_site, digits_root, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('method = "damped"\nquantizer = "coarse-pq"\nbits = 16\nepochs = 3\n'
                    "warmup_epochs = 1\ndamped_gamma = [0.25, 1.0]\n")
    done = gslbench_command(plugin_site, digits_root, "bench", str(grid))
    assert done.returncode == 0, done.stderr
    tables = (digits_root / "results" / "report" / "tables.md").read_text()
    assert "damped γ=0.25" in tables and "damped γ=1" in tables  # the report's tables
    listed = gslbench_command(plugin_site, digits_root, "bench", str(grid), "--dry-run").stdout
    assert listed.count("done") == 3 and "2 cells: 2 done" in listed


@pytest.mark.slow
def test_tune_chooses_the_plugin_knob(plugin_site, digits_root, tmp_path):
    grid = tmp_path / "tuning.toml"
    grid.write_text('method = "damped"\nquantizer = "coarse-pq"\nbits = 16\nseed = [0, 1]\n'
                    "epochs = 3\nwarmup_epochs = 1\n")
    out = tmp_path / "tuned.toml"
    done = gslbench_command(plugin_site, digits_root, "tune", str(grid), "--trials", "2",
                            "--out", str(out), "--doc", str(tmp_path / "tuning.md"))
    assert done.returncode == 0, done.stderr
    assert "damped_gamma" in out.read_text()


def test_a_plugin_leaves_the_built_in_runs_ids_alone(plugin_site, digits_root):
    code = ("from gslbench.config import RunConfig; from gslbench.methods import METHODS; "
            "print('damped' in METHODS, RunConfig(method='gsl').run_id, "
            "RunConfig(method='float').run_id)")
    env = plugin_environment(plugin_site)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True)
    assert done.stdout.split() == ["True", RunConfig(method="gsl").run_id,
                                   RunConfig(method="float").run_id]


BAD_PLUGINS = '''
from gslbench.methods.base import Method
from gslbench.quantizers.pq import PQ
from gslbench.settings import Setting


class NoDefault(Method):
    name = "nodefault"
    knobs = (Setting("nodefault_alpha", float, None, "A knob without a default."),)


class Misnamed(Method):
    name = "other"


class NotAQuantizer:
    name = "notq"


class Impostor(PQ):
    name = "pq"


class NegativeIters(PQ):
    name = "negpq"
    OPTIONS = {"kmeans_iters": -5}


def helper():
    """Not a class at all."""
'''
BAD_ENTRY_POINTS = {
    "gslbench.methods": {"missing": "bad_plugins_missing:Method",
                         "gsl": "bad_plugins:NoDefault",
                         "nodefault": "bad_plugins:NoDefault",
                         "helper": "bad_plugins:helper",
                         "misnamed": "bad_plugins:Misnamed"},
    "gslbench.quantizers": {"notq": "bad_plugins:NotAQuantizer", "pq": "bad_plugins:Impostor",
                            "negpq": "bad_plugins:NegativeIters"},
    "gslbench.datasets": {"nodata": "bad_plugins:helper"},
}


def test_each_bad_plugin_is_one_warning_line_naming_it(tmp_path, digits_root):
    """An installed distribution with bad entry points (its dist-info, as pip writes it)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "bad_plugins.py").write_text(BAD_PLUGINS)
    info = site / "bad_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items())
        for group, points in BAD_ENTRY_POINTS.items()))
    done = gslbench_command(site, digits_root, "--help")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    expected = {("missing", "cannot import it: ModuleNotFoundError"),
                ("gsl", "'gsl' is a built-in name"),
                ("nodefault", "knob 'nodefault_alpha' has no default"),
                ("helper", "is not a subclass of gslbench.methods.base.Method"),
                ("misnamed", "its name is 'other', not the entry point's 'misnamed'"),
                ("notq", "is not a subclass of gslbench.quantizers.base.Quantizer"),
                ("pq", "'pq' is a built-in name"),
                ("negpq", "its default option kmeans_iters=-5 is not a positive integer"),
                ("nodata", "is not a gslbench.data.Dataset")}
    assert len(lines) == len(expected), done.stderr
    for name, why in expected:
        assert sum(line.startswith(f"plugin {name!r} (gslbench.") and why in line
                   for line in lines) == 1, (name, done.stderr)
    assert "nodefault" not in done.stdout
    refused = gslbench_command(site, digits_root, "train", "--method", "nodefault")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1].startswith(
        "gslbench: error: Invalid value for '--method': 'nodefault' is not one of")


@pytest.mark.slow
def test_the_test_kit_passes_the_plugin_method_in_its_own_tests(plugin_site, tmp_path):
    """The plugin author's workflow: pytest on the plugin's own test file, which calls the kit
    (without gslbench's own conftest, which keeps plugins out of gslbench's tests)."""
    env = plugin_environment(plugin_site)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--noconftest",
                           str(PLUGIN_PACKAGE / "check_plugin.py")],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_the_test_kit_catches_a_method_whose_gradient_is_lost(monkeypatch):
    monkeypatch.setattr(METHODS["two-step"], "representation", lambda self, z: z.detach())
    with pytest.raises(AssertionError, match="two-step: no gradient reaches z"):
        check_gradients_flow(METHODS["two-step"])


def test_the_test_kit_refuses_a_method_that_is_not_registered():
    class Unregistered(Method):
        name = "unregistered"

    with pytest.raises(AssertionError, match="install its package"):
        check_method(Unregistered)


def dry_run_cells(site: Path, root: Path, *args: str) -> list[str]:
    """The cell lines (after RUN STATE CELL) of `bench --dry-run ARGS` with `site` visible."""
    done = gslbench_command(site, root, "bench", "--dry-run", *args)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.strip().splitlines()[1:]
            if not line.startswith("estimate: ") and " cells: " not in line]


@pytest.mark.slow
def test_an_installed_method_plugin_leaves_the_default_grid_as_quick_toml_declares(
        plugin_site, digits_root):
    cells = dry_run_cells(plugin_site, digits_root)
    assert cells == dry_run_cells(plugin_site, digits_root, str(REPOSITORY / "benchmarks/quick.toml"))
    assert len(cells) == 1 + 10 * 3 and not any("damped" in cell for cell in cells)
    # the plugin is loaded all the same: it can be asked for
    assert any("damped" in cell for cell in dry_run_cells(plugin_site, digits_root, "--methods",
                                                          "float,damped"))


@pytest.mark.slow
def test_the_suite_passes_with_a_method_plugin_installed(plugin_site, tmp_path):
    """The project's tests that an installed plugin broke (the default grid's count, a report
    that must not import torch) pass in a process that sees the plugin: the suite's conftest
    keeps installed plugins out of them."""
    env = plugin_environment(plugin_site)
    assert "damped" in subprocess.run(
        [sys.executable, "-c", "import gslbench.methods as m, gslbench.config; print(*m.METHODS)"],
        capture_output=True, text=True, env=env, check=True).stdout
    tests = REPOSITORY / "tests"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{tests / 'test_bench.py'}::test_quick_toml_gives_exactly_the_cells_of_bench_without_arguments",
         f"{tests / 'test_cli.py'}::test_importing_the_command_line_loads_neither_torch_nor_faiss",
         f"{tests / 'test_api.py'}::test_import_loads_neither_torch_nor_faiss"],
        capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0 and "3 passed" in done.stdout, done.stdout + done.stderr


def test_gslbench_disable_plugins_loads_none(plugin_site, digits_root):
    env = {**plugin_environment(plugin_site), DISABLE: "1"}
    done = subprocess.run([sys.executable, "-m", "gslbench", "train", "--help"],
                          capture_output=True, text=True, env=env, check=True)
    assert "damped" not in done.stdout and "coarse-pq" not in done.stdout
