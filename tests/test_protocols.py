"""Feature file format 3: the held-out validation split (queries and database, both out of what
tuning runs train on) and the unseen-classes protocol, for built-in and imported data sets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from gslbench.cli import cli
from gslbench.config import RunConfig
from gslbench.data import backbones
from gslbench.data.base import Protocol, Validation, split_indices, unseen_classes
from gslbench.data.featurefile import has_validation_split, multi_hot, read_feature_file
from gslbench.data.features import build_features
from gslbench.errors import GslbenchError
from gslbench.storage import config_id, content_sha256


def invoke(tmp_path, *args):
    return CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "data"),
                                    "--results-dir", str(tmp_path / "results"), *args])


def assert_user_error(result, *fragments):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("gslbench: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def digits_features(tmp_path, *options) -> Path:
    assert invoke(tmp_path, "download", "digits").exit_code == 0
    result = invoke(tmp_path, "features", "digits", *options)
    assert result.exit_code == 0, result.output
    return Path(result.output.strip())


# --- the validation split ----------------------------------------------------------------------

@pytest.mark.parametrize("inside", [True, False])
def test_the_validation_split_is_held_out_of_the_training_pool_by_class(inside):
    labels = multi_hot(np.repeat(np.arange(10), 80), 10)
    protocol = Protocol(10, 40, None, train_in_database=inside)
    split = split_indices(labels, protocol, seed=4, validation=Validation(0.1, 0.2))
    query, train = split["query"], split["train"]
    vq, vdb = split["validation_query"], split["validation_database"]
    assert (labels[vq].sum(axis=0) == 4).all() and (labels[vdb].sum(axis=0) == 8).all()
    assert np.isin(vq, train).all() and np.isin(vdb, train).all() and not np.isin(vq, vdb).any()
    rest = np.setdiff1d(train, np.concatenate([vq, vdb]))  # what tuning runs train on
    assert len(rest) == 400 - 40 - 80 and not np.isin(np.concatenate([vq, vdb]), query).any()
    again = split_indices(labels, protocol, seed=4, validation=Validation(0.1, 0.2))
    assert all(np.array_equal(split[k], again[k]) for k in split)  # seeded by the split seed
    # the test parts are those drawn before validation splits existed, whatever the shares
    other = split_indices(labels, protocol, seed=4, validation=Validation(0.25, 0.25))
    for part in ("query", "train", "database"):
        np.testing.assert_array_equal(other[part], split[part])
    assert len(other["validation_query"]) == len(other["validation_database"]) == 100
    small = split_indices(labels, protocol, seed=4, validation=Validation(0.5, 0.5))
    assert set(small) == {"query", "train", "database"}  # 20 + 20 of 40 leave nothing to train


def test_unseen_classes_are_a_seeded_quarter_and_absent_for_multi_label_data():
    labels = multi_hot(np.repeat(np.arange(10), 5), 10)
    held_out = unseen_classes(labels, seed=0)
    assert len(held_out) == 2 and held_out.dtype == np.int64  # 8 of 10 classes seen
    np.testing.assert_array_equal(held_out, unseen_classes(labels, seed=0))
    assert any(not np.array_equal(held_out, unseen_classes(labels, seed)) for seed in range(1, 5))
    assert len(unseen_classes(multi_hot(np.repeat(np.arange(4), 5), 4), 0)) == 1  # 3 of 4 seen
    multi = labels.copy()
    multi[0, 1] = 1
    assert unseen_classes(multi, 0) is None


def test_the_feature_file_records_the_validation_split_and_tuning_never_trains_on_it(tmp_path):
    path = digits_features(tmp_path, "--validation-queries", "0.2", "--validation-database", "0.3")
    with h5py.File(path) as handle:
        assert int(handle.attrs["format_version"]) == 3 and has_validation_split(path)
        assert json.loads(handle.attrs["validation"]) == {"queries": 0.2, "database": 0.3}
        held_out = json.loads(handle.attrs["unseen_classes"])
    features = read_feature_file(path)
    assert len(features.validation_query.indices) == 10 * 10  # a fifth of 50 per class
    assert len(features.validation_database.indices) == 10 * 15
    validation = read_feature_file(path, "validation")
    trained = validation.train.indices
    assert len(trained) == 500 - 100 - 150
    assert not np.isin(trained, validation.query.indices).any()
    assert not np.isin(trained, validation.database.indices).any()
    assert not np.isin(validation.query.indices, validation.database.indices).any()
    assert np.isin(trained, features.train.indices).all()  # all from the training pool
    rows = np.searchsorted(features.train.indices, validation.database.indices)
    np.testing.assert_array_equal(validation.database.features, features.train.features[rows])
    assert len(held_out) == 2 and features.unseen_classes == tuple(held_out)
    assert_user_error(invoke(tmp_path, "features", "digits", "--validation-queries", "0"),
                      "--validation-queries 0 is outside (0, 1]")


@pytest.mark.parametrize("split", ["test", "validation"])
def test_the_unseen_protocol_never_trains_on_a_query_or_database_class(tmp_path, split):
    path = digits_features(tmp_path)
    unseen = read_feature_file(path, split, "unseen")
    classes = {name: set(np.flatnonzero(part.labels.sum(axis=0)))
               for name, part in (("train", unseen.train), ("query", unseen.query),
                                  ("database", unseen.database))}
    held_out = set(read_feature_file(path).unseen_classes)
    if split == "test":
        assert classes["query"] == classes["database"] == held_out
        assert classes["train"] == set(range(10)) - held_out
        assert len(unseen.train.indices) == 8 * 50 and len(unseen.query.indices) == 2 * 10
    else:  # tuning in the unseen protocol: the seen classes' validation split only
        assert not (classes["train"] | classes["query"] | classes["database"]) & held_out
        assert not np.isin(unseen.train.indices, np.concatenate(
            [unseen.query.indices, unseen.database.indices])).any()
    standard = read_feature_file(path, split)
    for name in ("train", "query", "database"):  # the same items' rows, a class filter
        part, whole = getattr(unseen, name), getattr(standard, name)
        rows = np.searchsorted(whole.indices, part.indices)
        np.testing.assert_array_equal(part.features, whole.features[rows])


def test_imported_data_sets_get_both_protocols_and_multi_label_refuses_unseen(tmp_path):
    rng = np.random.default_rng(0)
    classes = np.repeat(np.arange(8), 30)
    features = rng.normal(size=(len(classes), 6)).astype(np.float32) + classes[:, None]
    np.savez(tmp_path / "mine.npz", features=features, labels=classes)
    result = invoke(tmp_path, "features", "import", "mine", "--from", str(tmp_path / "mine.npz"),
                    "--query-per-class", "5", "--train-per-class", "20",
                    "--validation-queries", "0.25", "--validation-database", "0.25")
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    validation = read_feature_file(path, "validation")
    assert len(validation.query.indices) == len(validation.database.indices) == 8 * 5
    assert len(validation.train.indices) == 8 * 10
    unseen = read_feature_file(path, "test", "unseen")
    assert set(np.flatnonzero(unseen.query.labels.sum(0))) == set(unseen.unseen_classes)
    assert not set(np.flatnonzero(unseen.train.labels.sum(0))) & set(unseen.unseen_classes)
    split = np.zeros(len(classes), np.int64)  # a given split: items 0, 30, ... train, 1, 31 query
    split[np.arange(0, len(classes), 3)] = 2
    split[np.arange(1, len(classes), 3)] = 1
    labels = multi_hot(classes, 8)
    labels[::5, 0] = 1  # some items with two labels
    np.savez(tmp_path / "multi.npz", features=features, labels=labels, split=split)
    result = invoke(tmp_path, "features", "import", "multi", "--from", str(tmp_path / "multi.npz"))
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    features_set = read_feature_file(path, "validation")
    assert features_set.unseen_classes is None and len(features_set.train.indices) > 0
    with pytest.raises(GslbenchError, match="no unseen protocol: multi-label items"):
        read_feature_file(path, "test", "unseen")


def test_an_older_feature_file_serves_standard_test_runs_only(tmp_path, monkeypatch):
    path = digits_features(tmp_path)
    before = read_feature_file(path)
    with h5py.File(path, "r+") as handle:  # what gslbench wrote before format 3
        handle.attrs["format_version"] = 2
        handle.attrs["content_sha256"] = content_sha256(handle)  # format 2 was sealed too
    old = read_feature_file(path)
    assert old.validation_query is None and old.unseen_classes is None
    np.testing.assert_array_equal(old.query.indices, before.query.indices)
    for split, protocol in (("validation", "standard"), ("test", "unseen")):
        with pytest.raises(GslbenchError, match="run `gslbench features digits` again"):
            read_feature_file(path, split, protocol)
    grid = tmp_path / "grid.toml"
    grid.write_text('method = ["qloss", "gsl"]\nbits = 16\nseed = [0, 1]\nepochs = 2\n'
                    'warmup_epochs = 1\n')
    assert_user_error(invoke(tmp_path, "tune", str(grid)), f"{path}: older than format_version 3",
                      "run `gslbench features digits` again")

    def no_extraction(*args, **kwargs):
        raise AssertionError("features extracted again")

    monkeypatch.setattr(backbones, "extract_features", no_extraction)
    assert build_features("digits", tmp_path / "data", split_seed=1) == path  # the split anew
    after = read_feature_file(path, "validation", "unseen")
    by_index = {i: row for part in before.splits().values()
                for i, row in zip(part.indices, part.features, strict=True)}
    for part in (after.train, after.query, after.database):
        np.testing.assert_array_equal(part.features, np.stack([by_index[i] for i in part.indices]))


def test_the_protocol_setting_leaves_standard_run_ids_as_they_were():
    standard = RunConfig(method="gsl", bits=16)
    record = standard.to_dict()
    assert "protocol" not in record and standard.run_id == config_id(record)
    assert RunConfig.from_dict(record) == standard  # a config.json written before the setting
    unseen = dataclasses.replace(standard, protocol="unseen")
    assert unseen.to_dict()["protocol"] == "unseen" and unseen.run_id != standard.run_id
    assert RunConfig.from_dict(unseen.to_dict()) == unseen
    with pytest.raises(GslbenchError, match="unknown protocol 'hidden'"):
        RunConfig(protocol="hidden")
