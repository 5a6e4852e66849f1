"""The unseen-class protocol's class draws: which classes a run holds out of training.

A draw is computed, never stored: from the number of classes C, how many the run holds out
(`unseen`, the run's setting), the run's `draw` index and the feature file's split seed, through
a numpy generator seeded by (split_seed, draw, stream), so another draw index gives another
seeded set of classes and the same index the same set on every machine. Its validation (what a
tuning run of the unseen protocol trains and is scored on) holds classes of its own out of the
seen ones (stream 1), so a tuning run never trains on a class its validation queries treat as
unseen.
"""

from __future__ import annotations

import numpy as np

from gslbench.errors import GslbenchError

DEFAULT_UNSEEN = 3  # of Fashion-MNIST's and CIFAR-10's 10 classes
MIN_CLASSES = 2  # unseen and seen classes each: with one unseen class every unseen item is
# relevant to every unseen query (mAP 1.0 for any method), with one seen class nothing is learnt


def unseen_classes(n_classes: int, unseen: int, draw: int, split_seed: int, *,
                   multilabel: bool = False) -> tuple[int, ...]:
    """The `unseen` class ids (sorted) of C = `n_classes` that draw `draw` holds out.

    A one-line user error when fewer than 2 classes would be unseen or fewer than 2 seen, and for
    multi-label data (an item can belong to seen and held-out classes at once)."""
    if multilabel:
        raise GslbenchError("no unseen protocol for multi-label data: an item can belong to seen "
                            "and held-out classes at once")
    if n_classes < 2 * MIN_CLASSES:
        raise GslbenchError(f"no unseen protocol: {n_classes} class(es) are too few (it needs at "
                            f"least {MIN_CLASSES} unseen and {MIN_CLASSES} seen)")
    if unseen < MIN_CLASSES or n_classes - unseen < MIN_CLASSES:
        raise GslbenchError(f"--unseen {unseen} of {n_classes} classes leaves {unseen} unseen and "
                            f"{n_classes - unseen} seen; the unseen protocol needs at least "
                            f"{MIN_CLASSES} of each")
    return _draw(n_classes, unseen, (split_seed, draw, 0))


def validation_unseen_classes(n_classes: int, held_out: tuple[int, ...], draw: int,
                              split_seed: int) -> tuple[int, ...]:
    """The classes the unseen protocol's validation holds out (sorted): drawn among the seen
    classes (those not in `held_out`), about as large a share of them as `held_out` is of the C
    classes (round(|held_out| x seen / C)), at least 2, leaving at least 2 to train on."""
    seen = [c for c in range(n_classes) if c not in held_out]
    count = max(MIN_CLASSES, round(len(held_out) * len(seen) / n_classes))
    if len(seen) - count < MIN_CLASSES:
        raise GslbenchError(f"the unseen protocol's validation holds out {count} of the "
                            f"{len(seen)} seen classes, leaving {len(seen) - count} to train on; "
                            f"it needs at least {MIN_CLASSES} (hold out fewer classes: --unseen)")
    return tuple(sorted(seen[i] for i in _draw(len(seen), count, (split_seed, draw, 1))))


def _draw(n: int, k: int, key: tuple[int, int, int]) -> tuple[int, ...]:
    """k of range(n), sorted, drawn by a generator seeded by `key`."""
    chosen = np.random.default_rng(key).choice(n, k, replace=False)
    return tuple(sorted(int(c) for c in chosen))
