"""Re-run chosen cells of the published results on this machine and print, per seed, the
published and the new mAP (not a test; prints what it measured).

Each chosen row of the published per-seed results (docs/results.csv: one row per run, codebook fit
and evaluation mode) is turned back into its run's config: its data set, feature (and the blocks it
fine-tuned), protocol, method, quantizer, code_bits, sub_bits, loss, class draw and seed, the
method's knobs read from its `variant` label (`gsl α=1 k=8 select=aligned`), every other setting at
its default. Those runs are trained, encoded and evaluated by `gslbench bench` (one torch and faiss
thread per cell, as the published runs record) under --results-dir, on the feature files under
--data-dir, which must already hold the data set's features (`gslbench download D && gslbench
features D`; check them first with benchmarks/feature_checksums.py). The `same run` column says
whether the rebuilt config is the published one (same run id): a tuned variant's label rounds its
knobs to 6 digits (--tuned gives the file the runs were benched with, whose exact knobs the rows
labelled with one of its choices then take), and a default changed since then changes the run, so
only rows with `yes` are the same experiment.

    python benchmarks/reproduce.py --method two-step --quantizer pq --bits 16 --seeds 0,1,2
    python benchmarks/reproduce.py --method gsl --quantizer pq --bits 16 --protocol standard \
        --tuned results/tuning/tuned.toml
    python benchmarks/reproduce.py --variant "gsl α=1 k=8 select=aligned" --bits 8 --dry-run

Prints one line per (cell, codebook fit, seed): published mAP, new mAP, new − published, and the
largest absolute difference at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# isort: off
import gslbench  # noqa: F401  first, as in the CLI: it sets OMP_WAIT_POLICY before OpenMP loads
# isort: on
import pandas as pd

from gslbench.bench.tuned import Tuned
from gslbench.config import RunConfig
from gslbench.errors import GslbenchError
from gslbench.methods import METHODS
from gslbench.report.rows import feature_settings

PUBLISHED = Path(__file__).resolve().parents[1] / "docs" / "results.csv"
FILTERS = {"dataset": str, "feature": str, "protocol": str, "method": str, "variant": str,
           "quantizer": str, "bits": int, "sub_bits": int, "codebooks": str, "draw": int}
CONFIG_COLUMNS = ["dataset", "feature", "protocol", "method", "variant", "quantizer", "code_bits",
                  "sub_bits", "loss", "draw", "seed"]


def choose_rows(published: pd.DataFrame, filters: dict[str, Any], seeds: list[int] | None
                ) -> pd.DataFrame:
    """The published rows of ADC / L2 evaluations that match every given filter and seed (a CSV
    written before class draws: draw 0)."""
    if "draw" not in published:
        published = published.assign(draw=0)
    rows = published[(published["search"] == "adc") & (published["metric"] == "l2")]
    for name, value in filters.items():
        column = "code_bits" if name == "bits" else name
        rows = rows[rows[column].astype(str) == str(value)]
    if seeds is not None:
        rows = rows[rows["seed"].isin(seeds)]
    return rows


def knobs_of(method: str, variant: str) -> dict[str, Any]:
    """The knob values a method's label shows: `gsl α=1 k=8 select=aligned` ->
    {"gsl_alpha": 1.0, "gsl_k": 8, "gsl_select": "aligned"}; a label that is not the method's is
    a user error."""
    knobs = METHODS[method].knobs
    by_symbol = {knob.symbol or knob.name: knob for knob in knobs}
    name, *shown = variant.split(" ")
    values = dict(token.partition("=")[::2] for token in shown)
    if name != method or set(values) != set(by_symbol):
        raise GslbenchError(f"variant {variant!r} is not a label of method {method!r} (knobs: "
                            f"{', '.join(by_symbol) or 'none'})")
    return {by_symbol[symbol].name: by_symbol[symbol].kind(value)
            for symbol, value in values.items()}


def exact_knobs(tuned: Tuned, method: str, variant: str) -> dict[str, Any] | None:
    """The knobs of a choice of the tuned file whose label is `variant` (a label rounds its knobs
    to 6 digits), or None: a tuned cell's choice, and a cell whose knobs were pinned from one
    (campaign 2's fine-tuned grid, `benchmarks/campaign2/pin_tuned.py`)."""
    spec = METHODS[method]
    for choice in tuned.choices:
        knobs = {knob.name: choice[knob.name] for knob in spec.knobs if knob.name in choice}
        if choice["method"] == method and len(knobs) == len(spec.knobs) \
                and spec.label(knobs) == variant:
            return knobs
    return None


def run_config(row: pd.Series, overrides: dict[str, Any], tuned: Tuned | None = None
               ) -> RunConfig:
    """The config of a published row, with `overrides` (settings by name) applied; its feature
    column gives back the feature and the fine-tuned blocks (`feature_settings`). With the tuned
    file the campaign was benched with, a row whose label is one of its choices takes that
    choice's exact knobs; any other (a control, a grid at its start knobs) its label's."""
    values = {"dataset": row["dataset"], **feature_settings(row["feature"]),
              "protocol": row["protocol"], "method": row["method"], "loss": row["loss"],
              "seed": int(row["seed"])}
    if "draw" in row and not pd.isna(row["draw"]):
        values["draw"] = int(row["draw"])
    if METHODS[row["method"]].quantized:
        values.update(quantizer=row["quantizer"], bits=int(row["code_bits"]),
                      sub_bits=int(row["sub_bits"]))
    knobs = knobs_of(row["method"], row["variant"])
    if tuned is not None:
        knobs = exact_knobs(tuned, row["method"], row["variant"]) or knobs
    return RunConfig(**values, **knobs, **overrides)


def reproduce(rows: pd.DataFrame, data_dir: Path, results_dir: Path,
              overrides: dict[str, Any], jobs: int = 1, tuned: Tuned | None = None
              ) -> pd.DataFrame:
    """Train, encode and evaluate the runs of `rows` (both codebook fits they list) and return
    the rows with `new_map` and `same_run` (whether the rebuilt config has the published run id);
    `tuned`: the tuned file the published runs were benched with (`run_config`)."""
    cells = rows.drop_duplicates(CONFIG_COLUMNS)
    configs = {tuple(row[CONFIG_COLUMNS]): run_config(row, overrides, tuned)
               for _, row in cells.iterrows()}
    grid = [{**config.to_dict(), "protocol": config.protocol} for config in configs.values()]
    new = gslbench.bench({"grid": grid, "codebooks": sorted(rows["codebooks"].unique())},
                         data_dir=data_dir, results_dir=results_dir, cpus_per_cell=1, jobs=jobs)
    new = new[(new["search"] == "adc") & (new["metric"] == "l2")]
    new_map = {(run, fit, condition): value for run, fit, condition, value in zip(
        new["run"], new["codebooks"], _conditions(new), new["map"], strict=True)}
    out = rows.copy()
    runs = [configs[tuple(row[CONFIG_COLUMNS])].run_id for _, row in rows.iterrows()]
    out["new_run"] = runs
    out["same_run"] = [run == published
                       for run, published in zip(runs, rows["run"], strict=True)]
    out["new_map"] = [new_map.get(key) for key in zip(runs, rows["codebooks"], _conditions(rows),
                                                      strict=True)]
    return out


def _conditions(frame: pd.DataFrame) -> list[str]:
    """The evaluation condition of each row ("" where there is none or no such column)."""
    if "condition" not in frame:
        return [""] * len(frame)
    return ["" if pd.isna(value) else str(value) for value in frame["condition"]]


def print_table(result: pd.DataFrame) -> None:
    """One line per (cell, codebook fit, seed), then the largest absolute difference."""
    print(f"{'cell':<58} {'fit':<8} {'seed':>4} {'published':>9} {'new':>9} {'new−pub':>9}  "
          "same run")
    for _, row in result.sort_values(CONFIG_COLUMNS + ["codebooks"], kind="stable").iterrows():
        cell = (f"{row['dataset']} {row['protocol']} {row['variant']} {row['quantizer']} "
                f"{row['code_bits']}b/{row['sub_bits']}")
        if _conditions(row.to_frame().T)[0]:
            cell += f" {row['condition']}"
        print(f"{cell:<58} {row['codebooks']:<8} {row['seed']:>4} {row['map']:>9.4f} "
              f"{row['new_map']:>9.4f} {row['new_map'] - row['map']:>+9.4f}  "
              f"{'yes' if row['same_run'] else 'no'}")
    print(f"largest |new − published|: {(result['new_map'] - result['map']).abs().max():.4f} "
          f"over {len(result)} rows")


def _overrides(pairs: list[str]) -> dict[str, Any]:
    """--set NAME=VALUE pairs -> settings, each value parsed as an int, a float or kept a str."""
    values = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        for kind in (int, float, str):
            try:
                values[name] = kind(text)
                break
            except ValueError:
                continue
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--published", type=Path, default=PUBLISHED,
                        help="the published per-seed results (default docs/results.csv)")
    parser.add_argument("--data-dir", type=Path, default=Path("datasets"))
    parser.add_argument("--results-dir", type=Path, default=Path("results/reproduce"))
    for name, kind in FILTERS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind)
    parser.add_argument("--seeds", help="comma-separated seeds (default: every published one)")
    parser.add_argument("--tuned", type=Path, help="the tuned file the published runs were "
                        "benched with (bench --tuned): the tuned variant's exact knobs")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change a setting of every run (then it is not the published run)")
    parser.add_argument("-j", "--jobs", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true", help="list the chosen rows and stop")
    args = parser.parse_args(argv)
    filters = {name: getattr(args, name) for name in FILTERS if getattr(args, name) is not None}
    seeds = [int(seed) for seed in args.seeds.split(",")] if args.seeds else None
    try:
        rows = choose_rows(pd.read_csv(args.published), filters, seeds)
        if rows.empty:
            raise GslbenchError(f"{args.published}: no row matches {filters} seeds {seeds}")
        if args.dry_run:
            print(rows[CONFIG_COLUMNS + ["codebooks", "map", "run"]].to_string(index=False))
            return 0
        tuned = Tuned.read(args.tuned) if args.tuned else None
        print_table(reproduce(rows, args.data_dir, args.results_dir, _overrides(args.set),
                              args.jobs, tuned))
    except GslbenchError as exc:
        print(f"reproduce: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
