"""Write the sample outputs that README.md and the docs show from what the commands print.

Each sample is a block between `<!-- generated: NAME -->` and `<!-- /generated -->` in a page;
this script runs the documented commands in a temporary folder (digits, the default bench, the
step-by-step commands of getting started, docs/examples/quickstart.py) and puts what they printed
there. README's answer table is docs/results.md's short one (`gslbench report --doc`), copied,
so the two cannot differ. Timings are never written (they vary run to run); the script prints the ones it
measured, for the ranges the prose gives.

    python benchmarks/sample_outputs.py                  # rewrite the blocks (about 3 min)
    python benchmarks/sample_outputs.py --check          # exit 1 with a diff where they drifted
    python benchmarks/sample_outputs.py --check --no-run # only the blocks that need no run

Results are the same for the same code, config and seed on one machine; another thread count or
another CPU can change the last digits (docs/guide/grids.md, threads and reproducibility; the
samples were last written on an AMD EPYC with AVX-512); tests/test_sample_outputs.py runs the
check.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's gslbench, wherever the script is run from
PAGES = [ROOT / "README.md", ROOT / "docs" / "index.md", ROOT / "docs" / "getting-started.md",
         ROOT / "docs" / "reference" / "api.md"]
RESULTS_PAGE = ROOT / "docs" / "results.md"
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)",
                   re.DOTALL)
# what changes from run to run, and what it is written as: the date and commit that made a report,
# timings (bench's progress line, a report's cost table)
VOLATILE = [(re.compile(r"\d{4}-\d\d-\d\d by gslbench (\S+) \(commit [^)]*\)"),
             r"DATE by gslbench \1 (commit ...)"),
            (re.compile(r" \(elapsed [^)]*\)"), " (elapsed ...)"),
            (re.compile(r"\b\d+ min \d+ s\b"), "... s")]
MAX_LINES = 40  # bench's stdout beyond this is cut, with a line saying how much


def answer_block(results_page: Path = RESULTS_PAGE) -> str:
    """The short answer table of docs/results.md (the verdicts alone, between its
    `<!-- short answer -->` markers)."""
    from gslbench.report.answer import SHORT

    start, end = (re.escape(marker) for marker in SHORT)
    found = re.search(f"{start}\n(?P<body>.*?){end}", results_page.read_text(encoding="utf-8"),
                      re.DOTALL)
    if found is None:
        raise SystemExit(f"{results_page}: no {SHORT[0]} block (regenerate it with "
                         "`gslbench report --doc`)")
    return found["body"]


def page_blocks(text: str) -> dict[str, str]:
    """The generated blocks of a page's text: name -> body."""
    return {found["name"]: found["body"] for found in BLOCK.finditer(text)}


def rewrite(text: str, samples: dict[str, str]) -> str:
    """The page's text with each block whose name is in `samples` replaced by its sample."""
    def replace(found: re.Match) -> str:
        body = samples.get(found["name"], found["body"])
        return f"{found[1]}{body}{found[4]}"
    return BLOCK.sub(replace, text)


def fenced(text: str) -> str:
    """`text` as a code block, with what changes from run to run (`VOLATILE`) left out."""
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return f"```\n{text.rstrip()}\n```\n"


def run(command: list[str], cwd: Path) -> tuple[str, str, float]:
    """Run a gslbench command in `cwd` with this checkout's package; stdout, stderr, seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GSLBENCH_DISABLE_PLUGINS": "1"}
    env.pop("GSLBENCH_DATA", None)
    env.pop("GSLBENCH_RESULTS", None)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout, done.stderr, time.perf_counter() - start


def gslbench(*args: str) -> list[str]:
    return [sys.executable, "-m", "gslbench", *args]


def capped(text: str, limit: int = MAX_LINES) -> str:
    """`text`, or its first `limit` lines (cut at a blank line) and how many more there are."""
    lines = text.rstrip().splitlines()
    if len(lines) <= limit:
        return "\n".join(lines)
    cut = max((i for i in range(limit) if not lines[i].strip()), default=limit)
    return "\n".join([*lines[:cut], "", f"... ({len(lines) - cut} more lines)"])


def first_map_table(results_dir: Path) -> str:
    """The report's first mAP table (training-set codebook fit), as `gslbench report` writes it."""
    import gslbench
    from gslbench.report.tables import paper_tables, tables_markdown

    table = next(t for t in paper_tables(gslbench.load_results(results_dir)) if t.kind == "map")
    rows = [line for line in tables_markdown([table]).splitlines() if line.startswith("|")]
    return "\n".join(rows) + "\n"


def run_samples(folder: Path) -> tuple[dict[str, str], dict[str, float]]:
    """Run the documented commands in `folder`: the samples and the seconds each took."""
    out, err, bench_s = run(gslbench("bench"), folder)
    log = [line for line in err.splitlines() if line.startswith("gslbench:")]
    samples = {"bench-log": fenced("\n".join([*log[:3], "..."])),
               "bench-output": fenced(capped(out)),
               "map-table": first_map_table(folder / "results")}
    steps = []
    for args in (["download", "digits"], ["features", "digits"],
                 ["train", "-d", "digits", "--method", "gsl", "--quantizer", "pq", "--bits", "32",
                  "--seed", "0"]):
        steps.append(run(gslbench(*args), folder)[0].strip())
    run_dir = steps[-1]
    steps += [run(gslbench("encode", run_dir), folder)[0].strip(),
              run(gslbench("evaluate", run_dir), folder)[0].strip()]
    samples["step-by-step"] = fenced("\n".join(steps))
    quick_out, _, quick_s = run([sys.executable, str(ROOT / "docs" / "examples" / "quickstart.py"),
                                 str(folder / "quickstart")], folder)
    samples["quickstart"] = fenced(quick_out)
    return samples, {"make bench (gslbench bench)": bench_s, "quickstart.py": quick_s}


def drift(pages: dict[Path, str], samples: dict[str, str]) -> str:
    """A unified diff of every page whose blocks differ from `samples` ("" when none does)."""
    diffs = []
    for path, text in pages.items():
        name = os.path.relpath(path, ROOT)
        diffs += difflib.unified_diff(text.splitlines(keepends=True),
                                      rewrite(text, samples).splitlines(keepends=True),
                                      f"{name} (committed)", f"{name} (generated)")
    return "".join(diffs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 with a diff where a page differs")
    parser.add_argument("--no-run", action="store_true",
                        help="only the blocks that need no command run (the answer)")
    args = parser.parse_args(argv)
    pages = {path: path.read_text(encoding="utf-8") for path in PAGES}
    samples = {"answer": answer_block()}
    if not args.no_run:
        with tempfile.TemporaryDirectory(prefix="gslbench-samples-") as folder:
            ran, seconds = run_samples(Path(folder))
        samples.update(ran)
        for what, value in seconds.items():
            print(f"{what}: {value:.0f} s", file=sys.stderr)
    named = {name for text in pages.values() for name in page_blocks(text)}
    if missing := sorted(named - set(samples) if not args.no_run else set()):
        raise SystemExit(f"no sample for the blocks {', '.join(missing)}")
    if args.check:
        diff = drift(pages, samples)
        sys.stdout.write(diff)
        return 1 if diff else 0
    for path, text in pages.items():
        if (new := rewrite(text, samples)) != text:
            path.write_text(new, encoding="utf-8")
            print(f"rewrote {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
