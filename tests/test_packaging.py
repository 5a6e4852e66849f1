"""What a researcher installs and cites: CITATION.cff, and the wheel built from this checkout,
installed into a fresh virtual environment and run from there alone."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CITATION = ROOT / "CITATION.cff"


def setup_cfg_version() -> str:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config["metadata"]["version"]


def test_citation_names_the_package_version():
    """The `version:` line (read without a YAML library) is setup.cfg's and the installed one's."""
    versions = re.findall(r"^version:\s*(\S+)\s*$", CITATION.read_text(encoding="utf-8"), re.M)
    assert versions == [setup_cfg_version()]
    assert versions[0] == metadata.version("gslbench")


def test_citation_parses_and_cites_the_gsl_paper():
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")
    cff = yaml.safe_load(CITATION.read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert cff["type"] == "software" and "gslbench" in cff["title"]
    assert str(cff["version"]) == setup_cfg_version()
    assert cff["authors"] and cff["message"]
    (paper,) = cff["references"]
    assert paper["title"] == ("Accurate Deep Representation Quantization with Gradient Snapping "
                              "Layer for Similarity Search")
    assert [author["family-names"] for author in paper["authors"]] == ["Liu", "Lu"]
    assert paper["year"] == 2016


def package_files() -> set[str]:
    """Every file of the gslbench package in this checkout, relative to ROOT (no bytecode)."""
    return {path.relative_to(ROOT).as_posix() for path in (ROOT / "gslbench").rglob("*")
            if path.is_file() and "__pycache__" not in path.parts}


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_trains(tmp_path):
    """`python -m build --wheel`, then pip installs the wheel (not this checkout) into a new
    venv that sees this interpreter's packages (torch, faiss...) only after its own; the
    installed `gslbench` reports the version and trains a tiny digits run."""
    pytest.importorskip("build", reason="the build package is not installed "
                                        "(pip install -e '.[test]' installs it)")
    source, dist = tmp_path / "source", tmp_path / "dist"
    # A copy of what the build reads, so that it writes its build/ and egg-info there, not here.
    shutil.copytree(ROOT / "gslbench", source / "gslbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    # No isolation: the build backend (setuptools) is this environment's, so no network is needed.
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                            str(dist), str(source)], capture_output=True, text=True, cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("gslbench-*.whl")
    assert wheel.name.startswith(f"gslbench-{setup_cfg_version()}-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert package_files() <= names, package_files() - names  # e.g. a data file left out
    assert any(name.endswith("entry_points.txt") for name in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python, gslbench = venv / "bin" / "python", venv / "bin" / "gslbench"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True).stdout
    # The dependencies come from here, after the venv's own site-packages; this file adds only
    # the directory (its .pth files, e.g. an editable gslbench, are not read).
    (Path(site.strip()) / "outer.pth").write_text(
        "\n".join(dict.fromkeys([sysconfig.get_paths()["purelib"],
                                 sysconfig.get_paths()["platlib"]])) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)

    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    work = tmp_path / "work"
    work.mkdir()

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    where = run(str(python), "-c", "import gslbench; print(gslbench.__file__)")
    assert Path(where).resolve().is_relative_to(venv.resolve()), where
    assert run(str(gslbench), "--version") == f"gslbench {setup_cfg_version()}"
    base = [str(gslbench), "--data-dir", "data", "--results-dir", "results", "-q"]
    run(*base, "download", "digits")
    run(*base, "features", "digits")
    run_id = run(*base, "train", "-d", "digits", "--method", "two-step", "--bits", "16",
                 "--epochs", "1", "--warmup-epochs", "0")
    made = work / "results" / "runs" / Path(run_id).name
    assert (made / "config.json").is_file() and (made / "model.pt").is_file(), run_id
