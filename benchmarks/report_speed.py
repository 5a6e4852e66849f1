"""Time `gslbench report` before and after a change, on one machine, in one run (not a test).

The gslbench package of git revision BASE (default `main`) is extracted with `git archive` into a
temporary folder; then, in turn, that package and this checkout's report on every run under
RESULTS_DIR (`write_report` into a temporary folder), each in a fresh Python process, ROUNDS
times, alternating. Each process times `write_report` as a whole and the time spent in the figure
functions it calls (`write_figures` and the `plot_*` functions gslbench.report imports), and
counts the figures written (PNG files). Printed: each round's times (wall clock, and the CPU time
of the figures: steadier on a loaded machine), the best of each side and the ratios base / this
checkout.

    python benchmarks/report_speed.py RESULTS_DIR [--base main] [--rounds 1] [--keep DIR]

With --keep the last round's reports are kept as DIR/before and DIR/after (to look at).

A realistic RESULTS_DIR: the digits demonstration (72 runs: two protocols, the unseen one's four
conditions, two codebook fits), made by `gslbench features digits` and
`gslbench bench benchmarks/demo.toml`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
from pathlib import Path
import gslbench.report as report

spent = [0.0, 0.0]
def timed(function):
    def wrapper(*args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start
            spent[1] += time.process_time() - cpu
    return wrapper

for name in dir(report):
    if name == "write_figures" or name.startswith("plot_"):
        setattr(report, name, timed(getattr(report, name)))
results, out = Path(sys.argv[1]), Path(sys.argv[2])
start = time.perf_counter()
report.write_report(report.select_runs(results), out)
total = time.perf_counter() - start
print(json.dumps({"total": total, "figures": spent[0], "cpu": spent[1], "pngs": len(list(out.glob("*.png"))),
                  "package": report.__file__}))
"""


def extract(base: str, folder: Path) -> Path:
    """The gslbench package of git revision `base`, extracted under `folder`; returns `folder`."""
    folder.mkdir(parents=True)
    archive = folder / "base.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", f"--output={archive}",
                    base, "gslbench"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder


def timed_report(source: Path, results: Path, out: Path) -> dict:
    """One report of `results` into `out` by the gslbench package under `source` (run from
    `out`'s folder, so that no other gslbench comes first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(results.resolve()), str(out)],
                          env=env, cwd=out.parent, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"report_speed: the report by {source} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a results folder (its runs/ are reported)")
    parser.add_argument("--base", default="main", help="the git revision to compare with")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the last reports as KEEP/before, KEEP/after")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="report-speed-") as tmp:
        sides = {args.base: extract(args.base, Path(tmp) / "base"), "this checkout": ROOT}
        best = {}
        for round_ in range(args.rounds):
            for (name, source), kept in zip(sides.items(), ("before", "after"), strict=True):
                out = Path(tmp) / f"report-{round_}-{kept}"
                timing = timed_report(source, args.results, out)
                if args.keep and round_ == args.rounds - 1:
                    shutil.rmtree(args.keep / kept, ignore_errors=True)
                    shutil.copytree(out, args.keep / kept)
                assert Path(timing["package"]).is_relative_to(source), timing["package"]
                print(f"round {round_ + 1}, {name}: report {timing['total']:.1f} s, of which "
                      f"figures {timing['figures']:.1f} s ({timing['cpu']:.1f} s CPU; "
                      f"{timing['pngs']} figures)", flush=True)
                best[name] = min(best.get(name, timing), timing, key=lambda t: t["figures"])
    before, after = best[args.base], best["this checkout"]
    for name, timing in best.items():
        print(f"best of {name}: figures {timing['figures']:.1f} s ({timing['cpu']:.1f} s CPU), "
              f"report {timing['total']:.1f} s")
    print(f"ratio {args.base} / this checkout: figures {before['figures'] / after['figures']:.1f}x "
          f"wall, {before['cpu'] / after['cpu']:.1f}x CPU; report "
          f"{before['total'] / after['total']:.1f}x wall")


if __name__ == "__main__":
    main()
