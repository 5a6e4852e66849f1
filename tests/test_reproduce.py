"""Reproducing published results: the expected feature checksums (benchmarks/feature_checksums.py,
gslbench.data.checksums) and the re-run of published cells (benchmarks/reproduce.py), on digits."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gslbench
from gslbench import data as datasets
from gslbench import layout
from gslbench.config import DEFAULTS
from gslbench.data.featurefile import Split, read_feature_file, write_feature_file
from gslbench.data.features import build_features, features_digest
from gslbench.errors import GslbenchError
from gslbench.methods import METHODS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checksums_script = _script("feature_checksums")
reproduce_script = _script("reproduce")


@pytest.fixture
def digits_features(tmp_path):
    datasets.download("digits", tmp_path / "data")
    return build_features("digits", tmp_path / "data")


def _rewrite(path: Path, change_value: bool = False, **attrs: str) -> None:
    """Write the feature file at `path` again with other attrs, and one feature value changed."""
    features = read_feature_file(path)
    train = features.train
    if change_value:
        values = train.features.copy()
        values[0, 0] += 0.5
        train = Split(values, train.labels, train.indices)
    write_feature_file(path, dataclasses.replace(
        features, train=train, extra_attrs={**features.extra_attrs, **attrs}))


def test_the_digest_covers_the_values_and_split_not_the_attrs(digits_features):
    features = read_feature_file(digits_features)
    digest = features_digest(features)
    assert features.extra_attrs["features_digest"] == digest
    assert json.loads(features.extra_attrs["source_files"]) == {
        "digits.npz": features.source_sha256}  # a single raw file: its own sha256
    relabelled = dataclasses.replace(features, extra_attrs={"threads": 7})
    assert features_digest(relabelled) == digest
    query = features.query
    moved = Split(query.features, query.labels, query.indices[::-1].copy())
    assert features_digest(dataclasses.replace(features, query=moved)) != digest
    nudged = query.features.copy()
    nudged[3, 5] = np.nextafter(nudged[3, 5], np.float32(2))
    assert features_digest(dataclasses.replace(
        features, query=Split(nudged, query.labels, query.indices))) != digest


def test_checksums_pass_a_fresh_build_and_name_what_differs(digits_features, tmp_path, capsys):
    data, expected = tmp_path / "data", tmp_path / "expected.json"
    args = ["--data-dir", str(data), "--expected", str(expected)]
    assert checksums_script.main([*args, "--write", "digits/pixels"]) == 0
    recorded = json.loads(expected.read_text())["digits/pixels"]
    assert recorded["features_digest"] == read_feature_file(digits_features).extra_attrs[
        "features_digest"]
    capsys.readouterr()

    build_features("digits", data)  # built again: the same features
    assert checksums_script.main(args) == 0
    assert "digits/pixels: same features" in capsys.readouterr().out

    _rewrite(digits_features, extraction=json.dumps({"threads": 3}))  # other attrs, same values
    assert checksums_script.main(args) == 0
    assert "the file's bytes differ" in capsys.readouterr().out

    _rewrite(digits_features, change_value=True, extraction=json.dumps({"threads": 3}))
    assert checksums_script.main(args) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT" in out and "features_digest: expected " + recorded["features_digest"] in out
    assert "extraction threads: expected None, found 3" in out

    layout.feature_path(data, "digits", "pixels").unlink()
    assert checksums_script.main(args) == 1
    assert "missing; run `gslbench download digits`" in capsys.readouterr().out
    assert checksums_script.main([*args, "--write", "digits/pixels"]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_variant_label_gives_back_its_knobs(method):
    knobs = {knob.name: DEFAULTS[knob.name] for knob in METHODS[method].knobs}
    label = METHODS[method].label(DEFAULTS)
    assert reproduce_script.knobs_of(method, label) == knobs
    with pytest.raises(GslbenchError, match="is not a label of method"):
        reproduce_script.knobs_of(method, label + " z=1")


def test_published_control_rows_give_back_their_run_ids():
    """The rows of docs/results.csv without tuned knobs rebuild to the very runs that were
    published (two-step and float have no knobs)."""
    published = pd.read_csv(reproduce_script.PUBLISHED)
    rows = pd.concat([reproduce_script.choose_rows(published, {"method": method}, [0])
                      for method in ("two-step", "float")])
    assert len(rows) > 0
    for _, row in rows.iterrows():
        assert reproduce_script.run_config(row, {}).run_id == row["run"]


def test_a_tuned_row_takes_the_tuned_files_exact_knobs_and_a_control_its_labels():
    """A tuned variant's label rounds its knobs (α=0.123457), so only the tuned file gives back
    its run; a control of the same cell (α=0) keeps its label's knobs; an unseen row its draw."""
    from gslbench.bench.tuned import Tuned
    from gslbench.config import RunConfig

    cell = {"dataset": "digits", "protocol": "unseen", "quantizer": "pq", "bits": 16,
            "sub_bits": 4}
    knobs = {"gsl_alpha": 0.123456789, "gsl_k": 8, "gsl_select": "aligned"}
    tuned = Tuned(1, (100, 101), {}, ({**cell, "method": "gsl", **knobs,
                                       "validation_map": 0.7},))
    published = RunConfig(**cell, method="gsl", **knobs, draw=3, seed=1)

    def row(variant):
        return pd.Series({"dataset": "digits", "feature": "pixels", "protocol": "unseen",
                          "method": "gsl", "variant": variant, "quantizer": "pq",
                          "code_bits": 16, "sub_bits": 4, "loss": "pairwise", "draw": 3,
                          "seed": 1})

    label = "gsl α=0.123457 k=8 select=aligned"
    assert reproduce_script.run_config(row(label), {}, tuned).run_id == published.run_id
    rounded = reproduce_script.run_config(row(label), {})
    assert rounded.gsl_alpha == 0.123457 and rounded.run_id != published.run_id
    control = reproduce_script.run_config(row("gsl α=0 k=8 select=aligned"), {}, tuned)
    assert (control.gsl_alpha, control.draw) == (0.0, 3)
    # the choice of another cell with the same knobs (a grid that pinned them): its exact knobs
    pinned = Tuned(1, (100, 101), {}, ({**cell, "bits": 8, "method": "gsl", **knobs,
                                        "validation_map": 0.7},))
    assert reproduce_script.run_config(row(label), {}, pinned).run_id == published.run_id
    # no choice has the row's label: the label's rounded knobs, not the published run
    other = Tuned(1, (100, 101), {}, ({**cell, "method": "gsl", **knobs, "gsl_alpha": 0.5,
                                       "validation_map": 0.7},))
    assert reproduce_script.run_config(row(label), {}, other).run_id == rounded.run_id


def test_a_fine_tuned_row_gives_back_its_blocks():
    """The feature column of a run that fine-tuned the CNN's last blocks names them
    (`efficientnet-lite0, last 1 block trained`): its row rebuilds the run's feature and blocks."""
    from gslbench.report.rows import feature_label, feature_settings

    for feature, blocks in (("efficientnet-lite0", 0), ("efficientnet-lite0", 1), ("pixels", 0),
                            ("efficientnet-lite0", 3)):
        label = feature_label(feature, blocks)
        assert feature_settings(label) == {"feature": feature, "train_blocks": blocks}
    assert feature_label("efficientnet-lite0", 3) == "efficientnet-lite0, last 3 blocks trained"
    row = pd.Series({"dataset": "fashion-mnist", "feature": "efficientnet-lite0, last 1 block "
                     "trained", "protocol": "standard", "method": "two-step", "variant": "two-step",
                     "quantizer": "pq", "code_bits": 16, "sub_bits": 4, "loss": "pairwise",
                     "draw": 0, "seed": 2})
    config = reproduce_script.run_config(row, {})
    assert (config.feature, config.train_blocks, config.seed) == ("efficientnet-lite0", 1, 2)


@pytest.mark.slow
def test_reproduce_reruns_a_cell_and_prints_published_and_new(digits_features, tmp_path, capsys):
    settings = {"dataset": "digits", "method": "two-step", "quantizer": "pq", "bits": 16,
                "sub_bits": 4, "epochs": 3, "warmup_epochs": 1, "seed": [0, 1],
                "codebooks": ["train", "database"]}
    data = tmp_path / "data"
    frame = gslbench.bench(settings, data_dir=data, results_dir=tmp_path / "published",
                           cpus_per_cell=1)
    published = tmp_path / "results.csv"
    frame.assign(map=frame["map"].where(frame["seed"] == 0, frame["map"] - 0.01)).to_csv(
        published, index=False)  # seed 1's published mAP lowered by 0.01
    args = ["--published", str(published), "--data-dir", str(data), "--results-dir",
            str(tmp_path / "again"), "--method", "two-step", "--set", "epochs=3",
            "--set", "warmup_epochs=1"]
    assert reproduce_script.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[1:-1]]
    assert len(rows) == 4 and all(row[-1] == "yes" for row in rows)  # the same runs
    by_seed = {(row[-6], row[-5]): float(row[-2]) for row in rows}
    assert by_seed == {("train", "0"): 0.0, ("database", "0"): 0.0,
                       ("train", "1"): 0.01, ("database", "1"): 0.01}
    assert lines[-1] == "largest |new − published|: 0.0100 over 4 rows"
    assert reproduce_script.main([*args[:6], "--method", "float"]) == 2
    assert "no row matches" in capsys.readouterr().err
