"""The package layout: one owner per concept, steps that read only the previous step's files,
the report side free of torch and faiss, no import cycle, methods that derive everything from
their registry entry."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from gslbench import layout
from gslbench.bench.grid import FIELD_TYPES
from gslbench.cli import bench, cli, train
from gslbench.config import FIELDS, RunConfig
from gslbench.methods import METHODS

PACKAGE = Path(__file__).resolve().parent.parent / "gslbench"
MAX_LINES = 400


def invoke(tmp_path, *args):
    data, results = tmp_path / "data", tmp_path / "results"
    return CliRunner().invoke(cli, ["--data-dir", str(data), "--results-dir", str(results), *args])


def test_the_report_side_imports_neither_torch_nor_faiss():
    code = ("import gslbench.report, gslbench.report.document, gslbench.report.tuning, "
            "gslbench.bench.tuned, sys; "
            "assert 'torch' not in sys.modules and 'faiss' not in sys.modules, "
            "[m for m in ('torch', 'faiss') if m in sys.modules]")
    subprocess.run([sys.executable, "-c", code], check=True)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, modules: set[str]) -> set[str]:
    """The gslbench modules `source` imports, wherever the import statement is: at module level,
    under `if TYPE_CHECKING:` (a type passed both ways is a circle too) or inside a function (it
    runs at call time, but still makes the two modules depend on each other). A name imported
    from a package that is one of its submodules counts as that submodule. A
    `lazy_import("gslbench...")` stand-in is not an import statement and does not count: it is
    how a registry entry refers to the torch module it builds at run time (`gslbench.lazy`)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gslbench"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("gslbench")}
    return found & modules


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` (module -> the modules it imports) as [a, b, ..., a], or None."""
    state: dict[str, str] = {}

    def visit(name: str, stack: list[str]) -> list[str] | None:
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                return [*stack[stack.index(other):], other]
            if other not in state and (found := visit(other, [*stack, other])):
                return found
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name, [name])):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle_through_any_kind_of_import():
    modules = {"gslbench.a", "gslbench.b", "gslbench.c", "gslbench.pkg", "gslbench.pkg.sub"}
    source = ("from typing import TYPE_CHECKING\nimport os\nfrom gslbench.pkg import sub\n"
              "if TYPE_CHECKING:\n    from gslbench.b import Plan\n"
              "def run():\n    import gslbench.c\n    from gslbench.elsewhere import x\n")
    assert _imports(source, modules) == {"gslbench.pkg.sub", "gslbench.b", "gslbench.c"}
    assert _imports('a = lazy_import("gslbench.b")\n', modules) == set()
    graph = {"gslbench.a": {"gslbench.b"}, "gslbench.b": {"gslbench.c"},
             "gslbench.c": {"gslbench.a"}, "gslbench.d": {"gslbench.a"}}
    assert _cycle(graph) == ["gslbench.a", "gslbench.b", "gslbench.c", "gslbench.a"]
    assert _cycle({**graph, "gslbench.c": set()}) is None
    assert _cycle({"gslbench.d": {"gslbench.a"}, "gslbench.a": {"gslbench.a2"},
                   "gslbench.a2": {"gslbench.a"}}) == ["gslbench.a", "gslbench.a2", "gslbench.a"]


def test_no_import_cycle():
    """No module of gslbench imports, directly or through others, a module that imports it."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _imports(path.read_text(), set(paths)) - {name} for name, path in paths.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
    assert len(graph) > 40 and sum(map(len, graph.values())) > 200  # the walk saw the package


def test_no_module_is_long_without_saying_why():
    for path in PACKAGE.rglob("*.py"):
        lines = len(path.read_text().splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert lines <= MAX_LINES or "Longer than" in docstring, f"{path}: {lines} lines"


@pytest.mark.slow
def test_run_files_are_named_in_one_place():
    """Only layout.py spells the names of a run's files."""
    names = ("config.json", "model.pt", "quantizer.h5", "codes.h5", "metrics.json", "train_log.csv",
             ".bench.lock")
    for path in PACKAGE.rglob("*.py"):
        if path.name == "layout.py":
            continue
        code = ast.unparse(ast.parse(path.read_text()))  # docstrings may name them; code may not
        tree = ast.parse(code)
        docstrings = _docstrings(tree)
        strings = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                   and isinstance(node.value, str) and id(node) not in docstrings]
        for name in names:
            assert not any(text == name or text.endswith("/" + name) for text in strings), (path, name)


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes of a module, its classes and functions."""
    return {id(parent.body[0].value) for parent in ast.walk(tree)
            if isinstance(parent, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and parent.body and isinstance(parent.body[0], ast.Expr)}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_method_is_one_module_whose_knobs_become_options_keys_and_labels(name):
    method = METHODS[name]
    assert (PACKAGE / "methods" / f"{name.replace('-', '_')}.py").is_file()
    assert method.__module__ == f"gslbench.methods.{name.replace('-', '_')}"
    train_options = {opt for param in train.params for opt in param.opts}
    bench_options = {opt for param in bench.params for opt in param.opts}
    for knob in method.knobs:
        assert FIELDS[knob.name] is knob and knob.name in FIELD_TYPES
        assert knob.option in train_options and knob.option in bench_options
    config = RunConfig(method=name)
    assert config.label == " ".join([name, *(knob.label(knob.default) for knob in method.knobs)])
    assert {knob.name for knob in method.knobs} <= set(config.to_dict())
    others = {knob.name for other in METHODS.values() if other is not method for knob in other.knobs}
    assert not others & set(config.to_dict()) - {knob.name for knob in method.knobs}


@pytest.mark.slow
def test_evaluate_reads_only_the_codes_file(tmp_path):
    for step in (("download", "digits"), ("features", "digits")):
        assert invoke(tmp_path, *step).exit_code == 0
    result = invoke(tmp_path, "train", "-d", "digits", "--method", "qloss", "--bits", "16",
                    "--epochs", "3", "--warmup-epochs", "1", "--epochs-per-refit", "1")
    assert result.exit_code == 0, result.output
    run = layout.RunDir(Path(result.output.strip()))
    assert invoke(tmp_path, "encode", str(run.path)).exit_code == 0
    aside = tmp_path / "aside"
    aside.mkdir()
    for path in (run.model, run.quantizer, tmp_path / "data" / "digits" / "pixels.h5"):
        shutil.move(path, aside / path.name)
    result = invoke(tmp_path, "evaluate", run.run_id)
    assert result.exit_code == 0, result.output
    assert run.metrics.is_file()

    with h5py.File(run.codes, "r+") as handle:  # a codes file of format version 1
        handle.attrs["format_version"] = 1
    result = invoke(tmp_path, "evaluate", run.run_id, "--force")
    assert result.exit_code == 2
    assert result.output.strip() == (f"gslbench: error: {run.codes}: written by an older gslbench "
                                     "(format_version 1); run `gslbench encode RUN --force`")
