"""The sample outputs of README.md and the docs are what the commands print
(benchmarks/sample_outputs.py), and README's answer is docs/results.md's."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "sample_outputs.py"


def load_script():
    spec = importlib.util.spec_from_file_location("sample_outputs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_answer_is_the_results_page_answer():
    samples = load_script()
    readme = samples.page_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    answer = samples.answer_block()
    assert answer.startswith("| feature | protocol | condition | quantizer | words | method | vs "
                             "two-step")
    # campaign 2: the tuned GSL with PQ and OPQ (standard), with PQ in the unseen protocol's four
    # conditions (stage 1); the fine-tuned GSL (stage 2) and the pixels' GSL (stage 3)
    assert answer.count("\n| efficientnet-lite0 | standard |") == 2
    assert answer.count("\n| efficientnet-lite0 | unseen |") == 4
    assert answer.count("\n| efficientnet-lite0, last 1 block trained | standard |") == 1
    assert answer.count("\n| pixels | standard |") == 1
    assert readme["answer"] == answer


def test_every_generated_block_has_a_sample_and_a_changed_one_is_a_diff(tmp_path):
    samples = load_script()
    names = {name for page in samples.PAGES
             for name in samples.page_blocks(page.read_text(encoding="utf-8"))}
    assert names == {"answer", "bench-log", "bench-output", "map-table", "step-by-step",
                     "quickstart"}
    text = "a\n<!-- generated: x -->\nold\n<!-- /generated -->\nb\n"
    assert samples.rewrite(text, {"x": "new\n"}) == text.replace("old", "new")
    assert samples.rewrite(text, {"y": "new\n"}) == text  # a block without a sample stays
    page = tmp_path / "page.md"
    diff = samples.drift({page: text}, {"x": "new\n"})
    assert "\n-old\n+new\n" in diff and "page.md (committed)" in diff
    assert samples.drift({page: text}, {"x": "old\n"}) == ""


def test_what_changes_from_run_to_run_is_left_out_and_long_output_is_cut():
    samples = load_script()
    printed = ("Generated on 2026-12-06 by gslbench 0.1.0 (commit 1e28eff3584d). From 61\n"
               "gslbench: [1/31] done 3ebd34f0d9c4 digits float seed 0 (elapsed 5s, ~2m21s left)\n"
               "| float | 1 | 0 | 40 | 40 | 0 min 01 s |")
    assert samples.fenced(printed) == (
        "```\nGenerated on DATE by gslbench 0.1.0 (commit ...). From 61\n"
        "gslbench: [1/31] done 3ebd34f0d9c4 digits float seed 0 (elapsed ...)\n"
        "| float | 1 | 0 | 40 | 40 | ... s |\n```\n")
    lines = "\n".join(["x"] * 30 + [""] + ["y"] * 30)
    assert samples.capped(lines, 40) == "\n".join(["x"] * 30 + ["", "... (31 more lines)"])
    assert samples.capped("a\nb", 40) == "a\nb"


@pytest.mark.slow
def test_the_committed_samples_are_what_a_fresh_run_prints():
    """Runs the default bench, the step-by-step commands and the quickstart in a temporary
    folder (about 3 minutes on 2 cores) and fails with the diff where a page differs."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True,
                          text=True, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
