"""The validation split and `gslbench tune`: no query item (nor, where the protocol keeps them
apart, any database item) is used for a choice; the same budget for every method; tune then
bench --tuned on digits."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gslbench import data as datasets
from gslbench.bench import tune
from gslbench.bench.grid import Grid
from gslbench.cli import cli
from gslbench.config import RunConfig
from gslbench.data import backbones
from gslbench.data.base import Protocol, split_indices
from gslbench.data.featurefile import has_validation_split, items_record, multi_hot, read_feature_file
from gslbench.data.features import build_features
from gslbench.errors import GslbenchError
from gslbench.methods import METHODS

HELD_OUT = Protocol(10, 50, None, train_in_database=False)  # digits, training pool out of the database


def invoke(tmp_path, *args):
    return CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "data"),
                                    "--results-dir", str(tmp_path / "results"), *args])


def assert_user_error(result, *fragments):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("gslbench: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def held_out_digits(monkeypatch):
    """digits with its training pool kept out of the database (like Fashion-MNIST)."""
    digits = datasets.get_dataset("digits")
    monkeypatch.setitem(datasets.DATASETS, "digits", dataclasses.replace(digits, protocol=HELD_OUT))


def digits_features(tmp_path) -> Path:
    assert invoke(tmp_path, "download", "digits").exit_code == 0
    result = invoke(tmp_path, "features", "digits")
    assert result.exit_code == 0, result.output
    return Path(result.output.strip())


# --- the validation split ----------------------------------------------------------------------

@pytest.mark.parametrize("inside", [True, False])
def test_the_validation_split_is_carved_from_the_training_pool_only(inside):
    labels = multi_hot(np.repeat(np.arange(10), 80), 10)
    protocol = Protocol(10, 40, None, train_in_database=inside)
    split = split_indices(labels, protocol, seed=4)
    query, train, database = split["query"], split["train"], split["database"]
    vq, vdb = split["validation_query"], split["validation_database"]
    assert protocol.validation_queries == 4  # a tenth of the training pool per class
    assert (labels[vq].sum(axis=0) == 4).all()  # class-balanced
    np.testing.assert_array_equal(np.sort(np.concatenate([vq, vdb])), train)  # a partition
    assert not np.isin(vq, vdb).any() and not np.isin(np.concatenate([vq, vdb]), query).any()
    assert np.isin(vdb, database).all() if inside else not np.isin(train, database).any()
    again = split_indices(labels, protocol, seed=4)
    assert all(np.array_equal(split[k], again[k]) for k in split)  # seeded by the split seed
    other = split_indices(labels, protocol, seed=5)
    assert not np.array_equal(other["validation_query"], vq)
    with pytest.raises(GslbenchError, match="4 validation queries per class leave no validation"):
        split_indices(labels, dataclasses.replace(protocol, train_per_class=4,
                                                  validation_query_per_class=4), seed=4)
    # the test parts are those drawn before validation splits existed (drawn first)
    unchanged = split_indices(labels, dataclasses.replace(protocol, validation_query_per_class=7), 4)
    for part in ("query", "train", "database"):
        np.testing.assert_array_equal(unchanged[part], split[part])


def test_the_feature_file_records_the_validation_split(tmp_path, held_out_digits):
    path = digits_features(tmp_path)
    features = read_feature_file(path)
    with h5py.File(path) as handle:
        assert int(handle.attrs["format_version"]) == 2
        assert json.loads(handle.attrs["protocol"])["validation_query_per_class"] == 5
        vq, vdb = handle["split/validation_query"][()], handle["split/validation_database"][()]
        np.testing.assert_array_equal(handle["validation/query/features"][()],
                                      features.validation_query.features)
    assert len(vq) == 50 and len(vdb) == 450
    test_items = np.concatenate([features.query.indices, features.database.indices])
    assert not np.isin(np.concatenate([vq, vdb]), test_items).any()
    rows = np.searchsorted(features.train.indices, vdb)  # the same items, the same features
    np.testing.assert_array_equal(features.validation_database.features, features.train.features[rows])
    validation = read_feature_file(path, "validation")
    assert validation.train is validation.database is features.validation_database
    assert validation.query is features.validation_query and has_validation_split(path)


def test_a_version_1_feature_file_is_read_but_tune_refuses_it(tmp_path):
    path = digits_features(tmp_path)
    with h5py.File(path, "r+") as handle:  # what gslbench wrote before issue 15
        for key in ("validation", "split/validation_query", "split/validation_database"):
            del handle[key]
        handle.attrs["format_version"] = 1
        del handle.attrs["content_sha256"]  # version 1 files had no digest
    features = read_feature_file(path)
    assert features.validation_query is None and len(features.query.indices) == 100
    assert not has_validation_split(path)
    with pytest.raises(GslbenchError, match="no validation split .* run `gslbench features digits`"):
        read_feature_file(path, "validation")
    grid = tmp_path / "grid.toml"
    grid.write_text('method = ["qloss", "gsl"]\nbits = 16\nseed = [0, 1]\nepochs = 2\n'
                    'warmup_epochs = 1\n')
    assert_user_error(invoke(tmp_path, "tune", str(grid)), f"{path}: no validation split",
                      "run `gslbench features digits` again")
    assert not (tmp_path / "results" / "tuning").exists()


def test_features_rewrites_the_split_of_an_existing_file_without_extracting(tmp_path, monkeypatch):
    path = digits_features(tmp_path)
    before = read_feature_file(path)

    def no_extraction(*args, **kwargs):
        raise AssertionError("features extracted again")

    monkeypatch.setattr(backbones, "extract_features", no_extraction)
    assert build_features("digits", tmp_path / "data", split_seed=1) == path
    after = read_feature_file(path)
    assert after.split_seed == 1
    assert not np.array_equal(after.query.indices, before.query.indices)
    by_index = {i: row for part in before.splits().values()
                for i, row in zip(part.indices, part.features, strict=True)}
    for part in after.parts().values():
        np.testing.assert_array_equal(part.features, np.stack([by_index[i] for i in part.indices]))


# --- the budget --------------------------------------------------------------------------------

def test_every_method_gets_the_same_number_of_settings():
    qloss, gsl = METHODS["qloss"], METHODS["gsl"]
    assert tune.knob_settings(qloss, 4) == [{"qloss_lambda": v} for v in qloss.knobs[0].tune]
    sample = tune.knob_settings(gsl, 4)  # 4 of the 3 x 3 products, seeded, in product order
    product = [{"gsl_alpha": a, "gsl_k": k, "gsl_select": "aligned"}  # no tune values: the default
               for a in gsl.knobs[0].tune for k in gsl.knobs[1].tune]
    assert len(sample) == 4 and sample == tune.knob_settings(gsl, 4)
    assert sorted(product.index(s) for s in sample) == [product.index(s) for s in sample]
    with pytest.raises(GslbenchError, match="--budget 5: qloss's knobs offer only 4 settings"):
        tune.knob_settings(qloss, 5)
    plan = tune.plan(Grid.from_mapping({"method": ["float", "two-step", "qloss", "gsl"],
                                        "bits": [16, 32], "seed": [0, 1]}))
    assert plan.budget == 4 and set(plan.settings) == {"qloss", "gsl"}  # float, two-step: no knobs
    assert len(plan.runs) == 2 * 2 * 4 * 2  # bits x methods x budget x seeds
    assert {c.split for c in plan.runs} == {"validation"}


@pytest.mark.parametrize("settings, fragment", [
    ({"method": ["qloss", "gsl"], "seed": [0, 1], "qloss_lambda": 1.0}, "qloss_lambda is chosen by tune"),
    ({"method": ["qloss", "gsl"], "seed": [0, 1], "split": "validation"}, "split is chosen by tune"),
    ({"method": ["qloss", "gsl"], "seed": 0}, "at least 2 seeds, the grid has 1"),
    ({"method": ["float", "two-step"], "seed": [0, 1]}, "no method of the grid has knobs"),
    ({"method": ["qloss"], "seed": [0, 1], "lr": [0.001, 0.01]}, "lr is an axis"),
])
def test_a_grid_tune_cannot_serve_is_a_user_error(settings, fragment):
    with pytest.raises(GslbenchError, match=fragment):
        tune.plan(Grid.from_mapping(settings, source="grid.toml"))


# --- the tuned file ----------------------------------------------------------------------------

def test_the_tuned_file_round_trips_and_refuses_cells_it_did_not_tune(tmp_path):
    plan = tune.plan(Grid.from_mapping({"method": ["qloss", "gsl"], "bits": [16, 32],
                                        "seed": [0, 1], "epochs": 8}))
    cells = {tune.cell_key(c) for c in plan.runs}
    chosen = pd.DataFrame([{"cell": cell, "method": method, "variant": "",
                            "knobs": plan.settings[method][1], "validation_map": 0.5}
                           for cell in sorted(cells) for method in plan.settings])
    path = tmp_path / "tuned.toml"
    tune.Tuned.from_choices(plan, chosen).write(path, header="a header")
    assert path.read_text().startswith("# a header\nbudget = 4\nseeds = [0, 1]\n")
    tuned = tune.Tuned.read(path)
    assert tuned.shared["epochs"] == 8 and len(tuned.choices) == 4
    config = RunConfig(method="gsl", bits=32, epochs=8, gsl_alpha=0.9)
    assert tuned.apply(config) == dataclasses.replace(config, **plan.settings["gsl"][1])
    assert tuned.apply(RunConfig(method="two-step", epochs=9)) == RunConfig(method="two-step", epochs=9)
    with pytest.raises(GslbenchError,
                       match="no tuned choice for digits gsl α=1 k=8 select=aligned pq 64 bits"):
        tuned.apply(RunConfig(method="gsl", bits=64, epochs=8))
    with pytest.raises(GslbenchError, match=r"tuned with epochs=8 \(this grid: 40\)"):
        tuned.apply(RunConfig(method="gsl", bits=32))
    path.write_text("budget = 4\n")
    with pytest.raises(GslbenchError, match="not a gslbench tuned file"):
        tune.Tuned.read(path)


# --- tune, then bench --tuned ------------------------------------------------------------------

GRID = """method = ["float", "two-step", "qloss", "gsl"]
dataset = "digits"
quantizer = "pq"
bits = 16
sub_bits = 4
seed = [0, 1]
epochs = 3
warmup_epochs = 1
epochs_per_refit = 1
"""


def records(run: Path) -> tuple[dict, dict, dict]:
    """config.json, metrics.json and the codes' `items` record of a run directory."""
    with h5py.File(run / "codes.h5") as handle:
        items = json.loads(handle.attrs["items"])
    return (json.loads((run / "config.json").read_text()),
            json.loads((run / "metrics.json").read_text()), items)


@pytest.mark.slow
def test_tune_then_bench_tuned_on_digits_never_touches_a_test_item(tmp_path, held_out_digits):
    path = digits_features(tmp_path)
    features = read_feature_file(path)
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    result = invoke(tmp_path, "tune", str(grid), "--budget", "2", "--doc", str(tmp_path / "tuning.md"))
    assert result.exit_code == 0, result.output
    runs = sorted((tmp_path / "results" / "tuning" / "runs").glob("[!.]*"))
    assert len(runs) == 2 * 2 * 2  # methods x budget x seeds
    validation = {"train": items_record(features.validation_database),
                  "query": items_record(features.validation_query),
                  "database": items_record(features.validation_database)}
    maps = {}
    for run in runs:
        config, metrics, items = records(run)
        assert config["config"]["split"] == "validation" and metrics["config"]["split"] == "validation"
        assert config["train_items"] == validation["train"]  # trained on the validation database
        assert items == {"query": validation["query"], "database": validation["database"]}
        maps.setdefault((config["config"]["method"], config["label"]), []).append(metrics["map"])
    # ... whose items the feature file shows apart from every test query and database item
    used = np.concatenate([features.validation_query.indices, features.validation_database.indices])
    assert not np.isin(used, np.concatenate([features.query.indices, features.database.indices])).any()

    tuned = tune.Tuned.read(tmp_path / "results" / "tuning" / "tuned.toml")
    assert tuned.budget == 2 and tuned.seeds == (0, 1) and len(tuned.choices) == 2
    for choice in tuned.choices:  # the highest mean validation mAP among the method's settings
        tried = {label: np.mean(values) for (method, label), values in maps.items()
                 if method == choice["method"]}
        assert len(tried) == 2
        label = METHODS[choice["method"]].label(choice)
        assert tried[label] == max(tried.values()) == pytest.approx(choice["validation_map"])
    table = (tmp_path / "tuning.md").read_text()
    assert all(f"| {label} |" in table for _, label in maps) and table.count("**") == 2 * 2

    result = invoke(tmp_path, "bench", str(grid), "--tuned",
                    str(tmp_path / "results" / "tuning" / "tuned.toml"))
    assert result.exit_code == 0, result.output
    test_runs = sorted((tmp_path / "results" / "runs").glob("[!.]*"))
    assert len(test_runs) == 8  # float, two-step, qloss, gsl at 2 seeds
    for run in test_runs:
        config, metrics, items = records(run)
        assert config["config"]["split"] == "test"
        assert items["query"] == items_record(features.query)
        if METHODS[config["config"]["method"]].knobs:
            assert tuned.apply(RunConfig.from_dict(config["config"])) == RunConfig.from_dict(config["config"])
    assert len(pd.read_csv(tmp_path / "results" / "report" / "results.csv")) == 8
