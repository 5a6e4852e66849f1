"""The documentation names only what the repository holds: every file path that a docstring, a
documentation page or the README names exists, and the README stays the front door
(under 10,000 characters). The site's own links are checked by `mkdocs build --strict`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_LIMIT = 6_000  # characters written by hand (the generated answer table comes on top)
README_TOTAL_LIMIT = 10_000  # with it: the reference belongs on the documentation site
# a repository path: a top folder of the repository, then lower-case segments, then an extension
# (upper-case segments such as RUN or DATASET are placeholders for what the tool writes)
REPO_PATH = re.compile(r"(?<![\w./-])((?:gslbench|tests|benchmarks|docs|\.ci)/[a-z0-9_./-]*"
                       r"[a-z0-9_]\.(?:py|md|toml|png|csv|txt|cfg|yml|yaml|json))\b")
# a top-level document in capitals (README.md, DESIGN.md, ...)
TOP_DOCUMENT = re.compile(r"(?<![\w./-])([A-Z][A-Z_]+\.md)\b")


def _sources() -> list[Path]:
    """Every Python file of the package, the tests and the benchmark scripts."""
    return sorted(path for folder in ("gslbench", "tests", "benchmarks")
                  for path in (ROOT / folder).rglob("*.py") if path != Path(__file__).resolve())


def _pages() -> list[Path]:
    """The README, mkdocs.yml and every documentation page written by hand (the generated
    results pages name what their generators name)."""
    return [README, ROOT / "mkdocs.yml", *sorted((ROOT / "docs").rglob("*.md"))]


def _docstrings(path: Path) -> str:
    """The module's, its classes' and its functions' docstrings, one after the other."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = [tree, *(node for node in ast.walk(tree) if isinstance(
        node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)))]
    return "\n".join(filter(None, (ast.get_docstring(node) for node in nodes)))


def _named_paths(text: str) -> set[str]:
    return set(REPO_PATH.findall(text)) | set(TOP_DOCUMENT.findall(text))


def _exists(name: str) -> bool:
    return (ROOT / name).exists() or ("/" not in name and (ROOT / "docs" / name).exists())


@pytest.mark.parametrize("path", [*_sources(), *_pages()], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_named_file_exists(path):
    text = _docstrings(path) if path.suffix == ".py" else path.read_text(encoding="utf-8")
    missing = sorted(name for name in _named_paths(text) if not _exists(name))
    assert not missing, f"{path.relative_to(ROOT)} names files the repository lacks: {missing}"


def test_the_check_finds_what_it_should():
    """The patterns catch a missing design file and a missing module, and skip placeholders."""
    text = ("see DESIGN.md section 5 and `gslbench/nosuch.py`; results/runs/RUN/config.json, "
            "DATA/NAME/FEATURE.h5, docs/design.md, `tests/test_docs.py`.")
    assert _named_paths(text) == {"DESIGN.md", "gslbench/nosuch.py", "docs/design.md",
                                  "tests/test_docs.py"}
    assert [name for name in sorted(_named_paths(text)) if not _exists(name)] == [
        "DESIGN.md", "gslbench/nosuch.py"]


def test_no_docstring_points_at_design_md():
    hits = [f"{path.relative_to(ROOT)}:{number}"
            for path in _sources()
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if "DESIGN.md" in line]
    assert not hits, f"DESIGN.md is not in the repository; point at docs/design.md: {hits}"


def test_readme_is_the_front_door():
    text = README.read_text(encoding="utf-8")
    prose = re.sub(r"<!-- generated: [\w-]+ -->\n.*?<!-- /generated -->", "", text, flags=re.DOTALL)
    assert len(prose) < README_LIMIT, f"README.md has {len(prose)} characters of prose"
    assert len(text) < README_TOTAL_LIMIT, f"README.md has {len(text)} characters"
    assert "make bench" in text and "make test" in text
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)", text))
    assert linked and all((ROOT / name).is_file() for name in linked), linked


def test_the_defaults_are_the_tuning_grids_start_knobs():
    """Campaign 2 does not move the defaults (issue 34): every knob's default is the start its
    tuning grid pins first, so the campaign's studies start where a user's run does. docs/tuning.md
    lists the most frequent choices of every tuned knob, for a later change of defaults."""
    import tomllib

    from gslbench.methods import METHODS

    grid = tomllib.loads((ROOT / "benchmarks" / "campaign2" / "tuning.toml").read_text("utf-8"))
    knobbed = {name for name in grid["method"] if METHODS[name].knobs}
    assert set(grid["start"]) == knobbed
    for name in knobbed:
        defaults = {knob.name: knob.default for knob in METHODS[name].knobs}
        assert grid["start"][name] == defaults, name
    text = (ROOT / "docs" / "tuning.md").read_text(encoding="utf-8")
    section = text.split("## The most frequent choices", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| ")
            and not line.startswith("| method")]
    assert {(row[0], row[1]) for row in rows} == {
        (name, knob.symbol) for name in knobbed for knob in METHODS[name].knobs}


@pytest.mark.parametrize("name", [pytest.param("results", marks=pytest.mark.slow), "finetune",
                                  "ann"])
def test_the_committed_documents_tables_rebuild_from_their_csv(name):
    """docs/results.md, docs/finetune.md and docs/ann.md: what they found, their tables and paired
    comparisons are made again from the committed per-seed CSV beside them, figure for figure."""
    from gslbench.report.doc_csv import rebuild_tables

    text = (ROOT / "docs" / f"{name}.md").read_text(encoding="utf-8")
    found, tables = rebuild_tables(ROOT / "docs" / f"{name}.csv")
    assert found.strip() and tables.strip()
    assert found in text and tables in text
