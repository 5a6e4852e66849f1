"""Feature file format 4: one training set for tuning and test runs, the validation split out of
the items no run trains on, and the unseen-classes protocol over seeded draws, for built-in and
imported data sets (issues 29 and 32)."""

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
from gslbench.data.featurefile import (
    FeatureSet,
    Split,
    has_validation_split,
    items_record,
    multi_hot,
    read_feature_file,
)
from gslbench.data.features import build_features
from gslbench.data.unseen import validation_unseen_classes
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


def per_class(labels: np.ndarray, indices: np.ndarray) -> list[int]:
    """Items per class among `indices`, by a plain loop."""
    return [sum(int(labels[i, c]) for i in indices) for c in range(labels.shape[1])]


# --- the splits --------------------------------------------------------------------------------

@pytest.mark.parametrize("inside", [True, False])
def test_the_splits_are_disjoint_and_counted_per_class(inside):
    labels = multi_hot(np.repeat(np.arange(10), 100), 10)
    split = split_indices(labels, Protocol(10, 40, None, train_in_database=inside), seed=4)
    sizes = {"query": 10, "train": 40, "validation_query": 10, "validation_database": 14}
    for part, count in sizes.items():  # 14 = round(1000 / 70): a seventh of the items
        assert per_class(labels, split[part]) == [count] * 10, part
    assert per_class(labels, split["database"]) == [100 - 10 - 10 - 14 - (0 if inside else 40)] * 10
    names = ["query", "train", "validation_query", "validation_database", "database"]
    for i, first in enumerate(names):  # disjoint, by a plain loop over pairs of parts
        for second in names[i + 1:]:
            common = set(split[first].tolist()) & set(split[second].tolist())
            expected = set(split["train"].tolist()) if inside and {first, second} == {
                "train", "database"} else set()
            assert common == expected, (first, second)
    assert sorted(set(np.concatenate(list(split.values())).tolist())) == list(range(1000))
    again = split_indices(labels, Protocol(10, 40, None, inside), seed=4)
    assert all(np.array_equal(split[k], again[k]) for k in split)  # seeded by the split seed
    other = split_indices(labels, Protocol(10, 40, None, inside), seed=5)
    assert not np.array_equal(split["validation_query"], other["validation_query"])
    given = split_indices(labels, Protocol(10, 40, None, inside), 4, Validation(5, 20))
    assert per_class(labels, given["validation_database"]) == [20] * 10
    for part in ("query", "train"):  # drawn before the validation split, whatever its sizes
        np.testing.assert_array_equal(given[part], split[part])
    # at most half the 50 free items of a class: the test database keeps as many
    too_many = split_indices(labels, Protocol(10, 40, None, inside), 4, Validation(6, 20))
    assert set(too_many) == {"query", "train", "database"}


def test_the_validation_sizes_follow_the_protocol_rule():
    """As many validation queries as test queries, a validation database of a seventh of the
    data set: Fashion-MNIST's 1,000 and 10,000, CIFAR-10's 1,000 and 8,570."""
    assert Validation().resolved(70000, 10, 100) == Validation(100, 1000)
    assert Validation().resolved(60000, 10, 100) == Validation(100, 857)
    assert Validation().resolved(1797, 10, 10) == Validation(10, 26)
    assert Validation(7, 0).resolved(1797, 10, 10) == Validation(7, 26)


def test_tuning_and_test_runs_train_on_one_set_and_score_on_disjoint_items(tmp_path):
    path = digits_features(tmp_path)
    with h5py.File(path) as handle:
        assert int(handle.attrs["format_version"]) == 4 and has_validation_split(path)
        assert json.loads(handle.attrs["validation"]) == {"queries": 10, "database": 26}
        assert "unseen_classes" not in handle.attrs  # computed from the split seed, not stored
    test, validation = read_feature_file(path), read_feature_file(path, "validation")
    np.testing.assert_array_equal(test.train.indices, validation.train.indices)
    np.testing.assert_array_equal(test.train.features, validation.train.features)
    labels = np.zeros((1797, 10), np.uint8)
    for part in test.parts().values():
        labels[part.indices] = part.labels
    counts = {"train": 50, "query": 10, "validation/query": 10, "validation/database": 26}
    for name, count in counts.items():
        assert per_class(labels, test.parts()[name].indices) == [count] * 10, name
    assert len(test.database.indices) == 1797 - 100 - 100 - 260  # with the 500 training items
    scored = np.concatenate([validation.query.indices, validation.database.indices])
    assert not np.isin(scored, np.concatenate([test.train.indices, test.query.indices,
                                               test.database.indices])).any()
    raw = np.load(tmp_path / "data" / "digits" / "raw" / "digits.npz")["images"] / 16.0
    for part in (validation.query, validation.database):  # the features of their own items
        np.testing.assert_allclose(part.features, raw[part.indices], rtol=1e-6)
    result = invoke(tmp_path, "features", "digits", "--validation-queries", "5",
                    "--validation-database", "40")
    assert result.exit_code == 0, result.output
    smaller = read_feature_file(path, "validation")
    assert len(smaller.query.indices) == 50 and len(smaller.database.indices) == 400
    assert_user_error(invoke(tmp_path, "features", "digits", "--validation-queries", "-1"),
                      "--validation-queries -1 is outside [0, 1000000000]")


def test_a_file_whose_validation_overlaps_the_test_parts_is_refused(tmp_path):
    path = digits_features(tmp_path)
    with h5py.File(path, "r+") as handle:
        indices = handle["split/validation_query"][()]
        indices[0] = handle["split/database"][0]
        handle["split/validation_query"][...] = indices
        handle.attrs["content_sha256"] = content_sha256(handle)
    with pytest.raises(GslbenchError, match="not disjoint from each other and from /split/train"):
        read_feature_file(path)


def as_format_3(path: Path) -> None:
    """Rewrite a feature file as gslbench wrote it before format 4: the validation split inside
    the training pool (/train holds it too) and the unseen classes stored."""
    with h5py.File(path, "r+") as handle:
        parts = ("train", "validation/query", "validation/database")
        indices = np.concatenate([handle["split/" + part.replace("/", "_")][()] for part in parts])
        order = np.argsort(indices)
        for key in ("features", "labels"):
            rows = np.concatenate([handle[f"{part}/{key}"][()] for part in parts])[order]
            del handle[f"train/{key}"]
            handle[f"train/{key}"] = rows
        del handle["split/train"]
        handle["split/train"] = indices[order]
        handle.attrs["format_version"] = 3
        handle.attrs["unseen_classes"] = "[2, 7]"
        handle.attrs["content_sha256"] = content_sha256(handle)


def test_an_older_feature_file_is_refused_with_one_line_and_rebuilt_keeping_its_features(
        tmp_path, monkeypatch):
    path = digits_features(tmp_path)
    before = read_feature_file(path)
    as_format_3(path)
    for split, protocol in (("test", "standard"), ("validation", "unseen")):
        with pytest.raises(GslbenchError, match=r"format_version 3\); rebuild it with "
                                                r"`gslbench features digits`"):
            read_feature_file(path, split, protocol)
    assert_user_error(invoke(tmp_path, "train", "--method", "float", "--epochs", "1"),
                      f"{path}: written by an older gslbench (format_version 3); rebuild it "
                      "with `gslbench features digits` (its features are kept)")

    def no_extraction(*args, **kwargs):
        raise AssertionError("features extracted again")

    monkeypatch.setattr(backbones, "extract_features", no_extraction)
    assert build_features("digits", tmp_path / "data", split_seed=1) == path  # the split anew
    after = read_feature_file(path, "validation", "unseen")
    by_index = {i: row for part in before.parts().values()
                for i, row in zip(part.indices, part.features, strict=True)}
    for part in after.parts().values():
        np.testing.assert_array_equal(part.features, np.stack([by_index[i] for i in part.indices]))


# --- the unseen protocol -----------------------------------------------------------------------

def test_unseen_classes_are_drawn_by_the_draw_and_the_split_seed():
    first = unseen_classes(10, 3, draw=0, split_seed=0)
    assert len(first) == 3 and list(first) == sorted(set(first)) and set(first) <= set(range(10))
    assert unseen_classes(10, 3, 0, 0) == first  # the same draw repeats
    draws = {unseen_classes(10, 3, draw, 0) for draw in range(5)}
    assert len(draws) >= 4  # different draws differ (120 possible sets)
    assert {unseen_classes(10, 3, 0, seed) for seed in range(5)} != {first}
    assert len(unseen_classes(10, 5, 7, 0)) == 5 and len(unseen_classes(4, 2, 0, 0)) == 2
    for n_classes, unseen in ((10, 1), (10, 0), (10, 9), (3, 2), (2, 2)):
        with pytest.raises(GslbenchError, match=r"needs at least 2 (of each|unseen and 2 seen)"):
            unseen_classes(n_classes, unseen, 0, 0)
    with pytest.raises(GslbenchError, match="no unseen protocol for multi-label data"):
        unseen_classes(10, 3, 0, 0, multilabel=True)


def toy_features(n_classes: int = 10, per_class: int = 6, labels: np.ndarray | None = None
                 ) -> FeatureSet:
    """A feature set whose five parts each hold `per_class` items of every class."""
    parts = {}
    for offset, name in enumerate(("train", "query", "database", "validation_query",
                                   "validation_database")):
        ids = np.repeat(np.arange(n_classes), per_class)
        indices = np.arange(len(ids)) + offset * len(ids)
        part_labels = multi_hot(ids, n_classes) if labels is None else labels
        parts[name] = Split(indices[:, None].astype(np.float32), part_labels, indices)
    return FeatureSet("toy", "toy", label_names=[str(c) for c in range(n_classes)],
                      split_seed=3, source_sha256="", **parts)


@pytest.mark.parametrize("draw", [0, 1, 2])
def test_the_unseen_protocol_trains_on_the_seen_classes_and_scores_every_class(draw):
    features = toy_features()
    unseen = features.for_protocol("unseen", unseen=3, draw=draw)
    held_out = unseen_classes(10, 3, draw, 3)
    assert unseen.unseen_classes == held_out and unseen.protocol == "unseen"
    classes = {name: {int(c) for c in part.labels.argmax(axis=1)}
               for name, part in unseen.parts().items()}
    assert classes["train"] == set(range(10)) - set(held_out)
    assert classes["query"] == classes["database"] == set(range(10))  # every class
    np.testing.assert_array_equal(unseen.query.indices, features.query.indices)
    np.testing.assert_array_equal(unseen.database.indices, features.database.indices)
    expected = [i for i, c in zip(features.train.indices, features.train.labels.argmax(axis=1),
                                  strict=True) if c not in held_out]
    assert unseen.train.indices.tolist() == expected
    assert features.for_protocol("standard", unseen=3, draw=draw) is features


@pytest.mark.parametrize("n_classes, unseen, draw", [(10, 3, 0), (10, 3, 4), (10, 5, 1),
                                                     (21, 4, 2), (6, 2, 0)])
def test_the_unseen_validation_never_trains_on_a_class_it_treats_as_unseen(n_classes, unseen,
                                                                           draw):
    protocol = toy_features(n_classes).for_protocol("unseen", unseen=unseen, draw=draw)
    tuning = protocol.for_split("validation")
    seen = set(range(n_classes)) - set(protocol.unseen_classes)
    trained = {int(c) for c in tuning.train.labels.argmax(axis=1)}
    held = set(tuning.unseen_classes)
    assert held <= seen and len(held) == max(2, round(unseen * len(seen) / n_classes))
    assert trained == seen - held and len(trained) >= 2  # never a class validation holds out
    for part in (tuning.query, tuning.database):  # the seen classes' validation items only
        assert {int(c) for c in part.labels.argmax(axis=1)} == seen
    assert tuning.unseen_classes == validation_unseen_classes(
        n_classes, protocol.unseen_classes, draw, 3)
    assert not np.isin(tuning.train.indices, np.concatenate(
        [tuning.query.indices, tuning.database.indices])).any()
    with pytest.raises(GslbenchError, match="leaving 1 to train on"):
        toy_features(10).for_protocol("unseen", unseen=7).for_split("validation")


def test_the_unseen_protocol_refuses_too_few_classes_and_multi_label_data():
    for n_classes in (2, 3):  # issue 32: one held-out class scored mAP 1.0 for every method
        with pytest.raises(GslbenchError, match=r"needs at least 2 (of each|unseen and 2 seen)"):
            toy_features(n_classes).for_protocol("unseen", unseen=n_classes - 1)
    labels = multi_hot(np.repeat(np.arange(10), 6), 10)
    labels[::7, 0] = 1
    with pytest.raises(GslbenchError, match="multi-label"):
        toy_features(labels=labels).for_protocol("unseen")
    assert toy_features(labels=labels).for_protocol("standard").unseen_classes == ()


def test_train_in_the_unseen_protocol_on_a_draw_runs_end_to_end(tmp_path):
    path = digits_features(tmp_path)
    options = ["--protocol", "unseen", "--draw", "1", "--method", "qloss", "--bits", "16",
               "--epochs", "2", "--warmup-epochs", "1", "--epochs-per-refit", "1"]
    result = invoke(tmp_path, "train", *options)
    assert result.exit_code == 0, result.output
    run = Path(result.output.strip().splitlines()[-1])
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["protocol"] == "unseen" and record["config"]["draw"] == 1
    trained = read_feature_file(path, "test", "unseen", 3, 1)
    assert record["train_items"] == items_record(trained.train)  # the seen classes' items
    assert record["train_items"]["n"] == 50 * 7
    for step in ("encode", "evaluate"):
        result = invoke(tmp_path, step, str(run))
        assert result.exit_code == 0, result.output
    assert set(trained.unseen_classes).isdisjoint(trained.train.labels.argmax(axis=1).tolist())
    assert_user_error(invoke(tmp_path, "train", *options, "--unseen", "9"),
                      "--unseen 9 of 10 classes leaves 9 unseen and 1 seen")


def test_imported_data_sets_get_both_protocols_and_multi_label_refuses_unseen(tmp_path):
    rng = np.random.default_rng(0)
    classes = np.repeat(np.arange(8), 30)
    features = rng.normal(size=(len(classes), 6)).astype(np.float32) + classes[:, None]
    np.savez(tmp_path / "mine.npz", features=features, labels=classes)
    result = invoke(tmp_path, "features", "import", "mine", "--from", str(tmp_path / "mine.npz"),
                    "--query-per-class", "5", "--train-per-class", "10",
                    "--validation-queries", "3", "--validation-database", "4")
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    test, validation = read_feature_file(path), read_feature_file(path, "validation")
    assert len(validation.query.indices) == 8 * 3 and len(validation.database.indices) == 8 * 4
    np.testing.assert_array_equal(validation.train.indices, test.train.indices)
    assert len(test.database.indices) == 8 * (30 - 5 - 10 - 3 - 4)
    unseen = read_feature_file(path, "test", "unseen", 2, 5)
    assert unseen.unseen_classes == unseen_classes(8, 2, 5, 0)
    assert not set(np.flatnonzero(unseen.train.labels.sum(0))) & set(unseen.unseen_classes)
    split = np.zeros(len(classes), np.int64)  # a given split: items 0, 3, ... train, 1, 4 query
    split[np.arange(0, len(classes), 3)] = 2
    split[np.arange(1, len(classes), 3)] = 1
    np.savez(tmp_path / "given.npz", features=features, labels=classes, split=split)
    result = invoke(tmp_path, "features", "import", "given", "--from", str(tmp_path / "given.npz"))
    assert result.exit_code == 0 and "no validation split: 10 validation queries" in result.output
    # 10 queries and 4 database items per class of the 10 given database items
    assert read_feature_file(Path(result.output.strip().splitlines()[-1])).validation_query is None
    result = invoke(tmp_path, "features", "import", "given2", "--from",
                    str(tmp_path / "given.npz"), "--validation-queries", "2",
                    "--validation-database", "3")
    assert result.exit_code == 0, result.output
    given = read_feature_file(Path(result.output.strip()))
    assert per_class(multi_hot(classes, 8), given.validation_database.indices) == [3] * 8
    held = np.concatenate([given.validation_query.indices, given.validation_database.indices])
    assert np.isin(held, np.flatnonzero(split == 0)).all()  # out of the given database
    np.testing.assert_array_equal(np.sort(np.concatenate([given.database.indices, held])),
                                  np.flatnonzero(split == 0))
    labels = multi_hot(classes, 8)
    labels[::5, 0] = 1  # some items with two labels
    np.savez(tmp_path / "multi.npz", features=features, labels=labels, split=split)
    result = invoke(tmp_path, "features", "import", "multi", "--from", str(tmp_path / "multi.npz"),
                    "--validation-queries", "2", "--validation-database", "2")
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    assert read_feature_file(path, "validation").unseen_classes == ()
    with pytest.raises(GslbenchError, match="no unseen protocol for multi-label data"):
        read_feature_file(path, "test", "unseen")


# --- the settings ------------------------------------------------------------------------------

def test_the_protocol_settings_leave_standard_run_ids_as_they_were():
    standard = RunConfig(method="gsl", bits=16)
    record = standard.to_dict()
    assert not {"protocol", "unseen", "draw"} & set(record)
    assert standard.run_id == config_id(record)
    assert RunConfig.from_dict(record) == standard  # a config.json written before the settings
    # unseen and draw do not split a standard run's id
    assert RunConfig(method="gsl", bits=16, unseen=4, draw=2).run_id == standard.run_id
    unseen = dataclasses.replace(standard, protocol="unseen")
    assert unseen.to_dict()["protocol"] == "unseen" and unseen.run_id != standard.run_id
    drawn = dataclasses.replace(unseen, draw=2, unseen=4)
    assert drawn.to_dict()["draw"] == 2 and drawn.to_dict()["unseen"] == 4
    assert len({unseen.run_id, drawn.run_id, dataclasses.replace(drawn, draw=3).run_id}) == 3
    assert RunConfig.from_dict(drawn.to_dict()) == drawn.resolved()
    with pytest.raises(GslbenchError, match="unknown protocol 'hidden'"):
        RunConfig(protocol="hidden")
    with pytest.raises(GslbenchError, match=r"--unseen 1 is outside \[2, 4096\]"):
        RunConfig(protocol="unseen", unseen=1)
    with pytest.raises(GslbenchError, match=r"--draw -1 is outside"):
        RunConfig(protocol="unseen", draw=-1)
