"""`gslbench features import NAME --image-list DIR`: the DeepHash-pytorch / thulab list reader on
folders of small generated images (Pillow), single- and multi-label, its one-line errors, and a
run on an imported multi-label set scored against a plain loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_import_ann import invoke, run_imported
from test_metrics import reference_ap

from gslbench import layout
from gslbench.data import get_dataset
from gslbench.data.featurefile import read_feature_file

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES, PER_CLASS = 3, 20
PIXELS = ["--backbone", "pixels", "--image-size", "16"]


def colour(item: int) -> tuple[int, int, int]:
    """Item `item`'s colour: its class's channel bright, the others by the item."""
    rgb = [(item * 7) % 50, (item * 13) % 50, (item * 3) % 50]
    rgb[item // PER_CLASS] = 200 + item % PER_CLASS
    return tuple(rgb)


def labels_of(item: int, multilabel: bool) -> list[int]:
    """One-hot by the item's class; multi-label: every fourth item also in the next class."""
    labels = [0] * CLASSES
    labels[item // PER_CLASS] = 1
    if multilabel and item % 4 == 0:
        labels[(item // PER_CLASS + 1) % CLASSES] = 1
    return labels


def make_lists(root: Path, multilabel: bool = False, images: Path | None = None) -> Path:
    """60 uniform 8 x 8 PNG squares (20 per class) under `images` (default: the lists' folder
    DIR) as img/cC/iN.png, and DIR/{train,test,database}.txt: per class 2 test queries and 4
    training items; the database is the other 14 per class, and, multi-label (as the NUS-WIDE
    lists), the training items too. Returns DIR."""
    lists = root / "lists"
    lists.mkdir()
    images = images or lists
    lines = {"train": [], "test": [], "database": []}
    for item in range(CLASSES * PER_CLASS):
        relative = f"img/c{item // PER_CLASS}/i{item}.png"
        (images / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), colour(item)).save(images / relative)
        line = " ".join([relative, *map(str, labels_of(item, multilabel))])
        rank = item % PER_CLASS
        part = "test" if rank < 2 else "train" if rank < 6 else "database"
        lines[part].append(line)
        if part == "train" and multilabel:
            lines["database"].append(line)
    for part, text in lines.items():
        (lists / f"{part}.txt").write_text("\n".join(text) + "\n")
    return lists


def listed_items(lists: Path, part: str) -> list[int]:
    """The item numbers (of `make_lists`) a list names, in its order."""
    return [int(line.split()[0].rsplit("/i", 1)[1][:-4])
            for line in (lists / f"{part}.txt").read_text().splitlines()]


@pytest.mark.parametrize("multilabel", [False, True])
def test_image_lists_import_as_given(tmp_path, multilabel):
    lists = make_lists(tmp_path, multilabel)
    result = invoke(tmp_path, "features", "import", "imgs", "--image-list", str(lists), *PIXELS)
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    assert path == layout.feature_path(tmp_path / "data", "imgs", "pixels-16")
    features = read_feature_file(path)
    items = {}  # source index -> item number, through the image's colour
    for part in features.parts().values():
        pixels = part.features.reshape(-1, 3, 16, 16)
        assert (pixels == pixels[:, :, :1, :1]).all()  # uniform squares stay uniform
        for index, rgb, labels in zip(part.indices, pixels[:, :, 0, 0], part.labels, strict=True):
            item = next(i for i in range(60) if np.allclose(rgb * 255, colour(i), atol=1e-3))
            assert items.setdefault(int(index), item) == item
            assert labels.tolist() == labels_of(item, multilabel)
    for part, listed in (("query", "test"), ("train", "train"), ("database", "database")):
        got = sorted(items[i] for i in getattr(features, part).indices)
        assert got == sorted(listed_items(lists, listed)), part  # as given
    validation = read_feature_file(path, split="validation")
    held = [items[i] for i in np.concatenate([validation.query.indices,
                                              validation.database.indices])]
    training = set(listed_items(lists, "train"))
    assert len(set(held)) == len(held) and not set(held) & training
    assert set(held) <= set(listed_items(lists, "database"))
    assert len(validation.query.indices) == 2 * CLASSES  # as many as the test queries per class
    assert features.multilabel is multilabel and features.n_classes == CLASSES
    record = json.loads(layout.imported_path(tmp_path / "data", "imgs").read_text())
    assert record["protocol"]["train_in_database"] is multilabel
    assert get_dataset("imgs", tmp_path / "data").default_feature == "pixels-16"


def test_the_images_may_lie_elsewhere_and_their_bytes_are_recorded(tmp_path):
    images = tmp_path / "pictures"
    lists = make_lists(tmp_path, images=images)
    args = ["--image-list", str(lists), "--image-root", str(images), *PIXELS]
    first = invoke(tmp_path, "features", "import", "one", *args)
    assert first.exit_code == 0, first.output
    Image.new("RGB", (8, 8), (1, 2, 3)).save(images / "img/c0/i7.png")  # one image changed
    second = invoke(tmp_path, "features", "import", "two", *args)
    assert second.exit_code == 0, second.output
    one, two = (read_feature_file(Path(out.output.strip())) for out in (first, second))
    assert one.source_sha256 != two.source_sha256
    changed = [np.any(a != b, axis=1).sum() for a, b in zip(
        (p.features for p in one.splits().values()), (p.features for p in two.splits().values()),
        strict=True)]
    assert sum(changed) == 1  # that image's features (in the database), nothing else


def test_given_list_paths_replace_the_folders(tmp_path):
    lists = make_lists(tmp_path)
    (lists / "train.txt").rename(tmp_path / "mine.txt")
    result = invoke(tmp_path, "features", "import", "imgs", "--image-list", str(lists),
                    "--train-list", str(tmp_path / "mine.txt"), *PIXELS, "--feature", "px",
                    "--map-at", "5")
    assert result.exit_code == 0, result.output
    assert len(read_feature_file(Path(result.output.strip())).train.indices) == 4 * CLASSES
    assert get_dataset("imgs", tmp_path / "data").protocol.map_top == 5


def _edit(lists: Path, part: str, line: int, text: str | None) -> None:
    """Replace line `line` (1-based) of a list with `text`, or drop it (None)."""
    lines = (lists / f"{part}.txt").read_text().splitlines()
    lines[line - 1:line] = [] if text is None else [text]
    (lists / f"{part}.txt").write_text("\n".join(lines) + "\n")


BAD_LISTS = {
    "missing image": (lambda d: _edit(d, "test", 3, "img/none.png 0 1 0"),
                      "{lists}/test.txt line 3: {lists}/img/none.png: no such image"),
    "wrong length": (lambda d: _edit(d, "database", 5, "img/c0/i9.png 1 0"),
                     "{lists}/database.txt line 5: 2 label values, but line 1 has 3"),
    "other list's length": (lambda d: (d / "test.txt").write_text("img/c0/i0.png 1 0 0 0\n"),
                            "{lists}/test.txt line 1: 4 label values, but {lists}/train.txt "
                            "line 1 has 3"),
    "unreadable image": (lambda d: (d / "img/c1/i25.png").write_text("not a png"),
                         "{lists}/train.txt line 8: {lists}/img/c1/i25.png: not a readable "
                         "image"),
    "empty list": (lambda d: (d / "train.txt").write_text("\n\n"),
                   "{lists}/train.txt: an empty list (no image)"),
    "missing list": (lambda d: (d / "database.txt").unlink(),
                     "{lists}/database.txt: no such list file"),
    "not 0 or 1": (lambda d: _edit(d, "train", 2, "img/c0/i3.png 0 2 0"),
                   "{lists}/train.txt line 2: want 'relative/path.jpg 0 1 0 ...'"),
    "no label": (lambda d: _edit(d, "train", 2, "img/c0/i3.png 0 0 0"),
                 "{lists}/train.txt line 2: no label is 1"),
    "query in the database": (lambda d: _edit(d, "database", 1, "img/c0/i1.png 1 0 0"),
                              "{lists}/test.txt: 1 test queries are also listed in "
                              "{lists}/database.txt (the first: img/c0/i1.png)"),
    "listed twice": (lambda d: _edit(d, "database", 2, "img/c0/i6.png 1 0 0"),
                     "{lists}/database.txt line 2: img/c0/i6.png is listed already on line 1"),
    "other labels": (lambda d: _edit(d, "database", 1, "img/c0/i2.png 0 1 0"),
                     "{lists}/database.txt line 1: img/c0/i2.png has other labels than on "
                     "{lists}/train.txt line 1"),
}


@pytest.mark.parametrize("case", list(BAD_LISTS))
def test_bad_lists_and_images_are_one_line_and_write_nothing(tmp_path, case):
    lists = make_lists(tmp_path)
    spoil, message = BAD_LISTS[case]
    spoil(lists)
    result = invoke(tmp_path, "features", "import", "imgs", "--image-list", str(lists), *PIXELS)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"gslbench: error: {message.format(lists=lists)}"), \
        result.output
    assert result.output.count("\n") == 1
    assert not (tmp_path / "data" / "imgs").exists()


def test_options_of_another_source_are_refused(tmp_path):
    lists = make_lists(tmp_path)
    result = invoke(tmp_path, "features", "import", "imgs", "--image-list", str(lists),
                    "--train-size", "10")
    assert result.output == ("gslbench: error: --train-size: goes with --ann-benchmarks, not "
                             "with --image-list\n")
    result = invoke(tmp_path, "features", "import", "imgs", "--from", "x.npz", "--backbone",
                    "pixels")
    assert result.output == "gslbench: error: --backbone: goes with --image-list, not with --from\n"


def test_a_run_on_imported_multilabel_lists_scores_as_a_plain_loop(tmp_path):
    """Relevance by sharing a label (as nuswide21): mAP of a float run against a plain loop."""
    lists = make_lists(tmp_path, multilabel=True)
    metrics, codes = run_imported(tmp_path, ["--image-list", str(lists), *PIXELS], 12)
    precisions = []
    for query, labels in zip(codes.queries.astype(np.float64), codes.query_labels, strict=True):
        distances = ((codes.database.astype(np.float64) - query) ** 2).sum(axis=1)
        ranking = sorted(range(len(distances)), key=lambda j, d=distances: (d[j], j))
        precisions.append(reference_ap([bool((codes.labels[j] & labels).any())
                                        for j in ranking]))
    assert metrics["map"] == pytest.approx(np.mean(precisions))
