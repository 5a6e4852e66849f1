"""The checks every training method passes, for a plugin's own tests (and gslbench's).

A plugin author calls them from pytest on their `Method` subclass::

    from gslbench.testing import check_method
    from mypkg import MyMethod

    def test_my_method_passes_gslbench_checks():
        check_method(MyMethod)

The method must be registered: its package installed with its entry point (`pip install -e .`
in the plugin's checkout), since its knobs are fields of the run configuration. `check_method`
runs each check below on a small seeded problem (8-d representations, a PQ of two 16-word
codebooks, plus RQ for methods that train against codebooks); each check is also a function of
its own. A failed check raises AssertionError saying what went wrong. Knob values other than the
defaults are given as keyword arguments (`check_method(MyMethod, mymethod_alpha=0.5)`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gslbench.config import RunConfig
from gslbench.data.featurefile import FeatureSet, Split
from gslbench.lazy import lazy_import
from gslbench.methods import METHODS, Method
from gslbench.quantizers import Quantizer, make_quantizer

torch = lazy_import("torch")

DIM, BITS, SUB_BITS = 8, 8, 4  # 2 codebooks of 16 codewords
BATCH = 16


def run_config(method: type[Method], quantizer: str = "pq", **knobs: Any) -> RunConfig:
    """A small run of `method`: 8-d representations, 8-bit codes of 4-bit codebooks, 4 epochs
    with a refit after each."""
    assert METHODS.get(method.name) is method, (
        f"{method.name!r} is not the registered method {method.__qualname__}: install its package "
        "(pip install -e .) so that gslbench finds its entry point (gslbench.methods)")
    return RunConfig(method=method.name, quantizer=quantizer, dim_out=DIM, bits=BITS,
                     sub_bits=SUB_BITS, hidden=32, epochs=4, warmup_epochs=1, epochs_per_refit=1,
                     batch_size=32, **knobs)


def _unit_rows(n: int, seed: int) -> Any:
    """(n, DIM) float32 unit-norm rows, seeded."""
    rows = torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed))
    return rows / rows.norm(dim=1, keepdim=True)


def fitted_method(method: type[Method], quantizer: str = "pq", **knobs: Any) -> Method:
    """`method` built as a run builds it, its quantizer (None for an unquantized method) fitted
    on 256 seeded unit vectors."""
    config = run_config(method, quantizer, **knobs)
    fitted: Quantizer | None = None
    if config.quantized:
        fitted = make_quantizer(quantizer, DIM, BITS, sub_bits=SUB_BITS, seed=0)
        fitted.fit(_unit_rows(256, seed=0).numpy())
    return config.method_spec(config, fitted)


def check_representation_shape(method: type[Method], quantizer: str = "pq", **knobs: Any) -> None:
    """`representation` maps a (b, d) float32 batch to (b, d) float32, finite."""
    built = fitted_method(method, quantizer, **knobs)
    z = _unit_rows(BATCH, seed=1).requires_grad_()
    out = built.representation(z)
    assert tuple(out.shape) == tuple(z.shape), (
        f"{method.name}: representation of a {tuple(z.shape)} batch has shape {tuple(out.shape)}")
    assert out.dtype == z.dtype, f"{method.name}: representation is {out.dtype}, not {z.dtype}"
    assert bool(torch.isfinite(out).all()), f"{method.name}: representation is not finite"


def check_penalty_finite(method: type[Method], quantizer: str = "pq", **knobs: Any) -> None:
    """`penalty` of a batch is a finite scalar tensor, at least 0 when it is a loss."""
    built = fitted_method(method, quantizer, **knobs)
    penalty = built.penalty(_unit_rows(BATCH, seed=1).requires_grad_())
    assert penalty.ndim == 0, f"{method.name}: penalty has shape {tuple(penalty.shape)}, not ()"
    assert bool(torch.isfinite(penalty)), f"{method.name}: penalty {float(penalty)} is not finite"


def check_gradients_flow(method: type[Method], quantizer: str = "pq", **knobs: Any) -> None:
    """A loss on the representation (plus the penalty) gives z a finite, non-zero gradient."""
    built = fitted_method(method, quantizer, **knobs)
    z = _unit_rows(BATCH, seed=1).requires_grad_()
    weights = torch.randn(BATCH, DIM, generator=torch.Generator().manual_seed(2))
    loss = (built.representation(z) * weights).sum() + built.penalty(z)
    assert loss.requires_grad, f"{method.name}: no gradient reaches z"
    loss.backward()
    assert z.grad is not None, f"{method.name}: no gradient reaches z"
    assert bool(torch.isfinite(z.grad).all()), f"{method.name}: z's gradient is not finite"
    assert bool(z.grad.abs().sum() > 0), f"{method.name}: z's gradient is zero everywhere"


def small_features(seed: int = 0) -> FeatureSet:
    """A seeded 3-class problem of 16-d Gaussian blobs: 96 training items, 24 queries, 96
    database items, one-hot labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 16)).astype(np.float32) * 3

    def split(n: int) -> Split:
        classes = np.arange(n) % 3
        features = (centres[classes] + rng.normal(size=(n, 16))).astype(np.float32)
        return Split(features, np.eye(3, dtype=np.uint8)[classes], np.arange(n))

    return FeatureSet(dataset="blobs", feature="blobs", train=split(96), query=split(24),
                      database=split(96), label_names=["a", "b", "c"], split_seed=seed,
                      source_sha256="")


def check_training_reproducible(method: type[Method], quantizer: str = "pq",
                                **knobs: Any) -> None:
    """Training twice with the same seed gives the same codes of the database (the same
    representations, for an unquantized method)."""
    from gslbench.methods.loop import train
    from gslbench.methods.model import embed

    config = run_config(method, quantizer, **knobs)
    features = small_features()
    outputs = []
    for _ in range(2):
        result = train(config, features, show_progress=False)
        embedded = embed(result.model, features.database.features)
        outputs.append(embedded if result.quantizer is None else result.quantizer.encode(embedded))
    assert np.array_equal(*outputs), f"{method.name}: two trainings with seed 0 differ"


CHECKS = (check_representation_shape, check_penalty_finite, check_gradients_flow,
          check_training_reproducible)


def check_method(method: type[Method], **knobs: Any) -> None:
    """Every check of this module on `method`: with PQ, and with RQ too (a beam of full
    reconstructions rather than sub-spaces) when the method trains against the codebooks."""
    assert isinstance(method, type) and issubclass(method, Method), (
        f"{method!r} is not a subclass of gslbench.methods.base.Method")
    quantizers = ("pq", "rq") if method.quantized and method.trains_against_codebooks else ("pq",)
    for quantizer in quantizers:
        for check in CHECKS:
            check(method, quantizer, **knobs)
