"""gslbench: benchmark the Gradient Snapping Layer against other ways of training for quantization.

The Python API (`gslbench.api`): `RunConfig`, `train`, `encode`, `evaluate`, `bench`, `tune`,
`report`, `load_results` (the results as a pandas DataFrame), `Method` (the base class of a
training method) and the Gradient Snapping Layer (`GradientSnappingLayer`, `snap_gradient`).
Everything loads on first use, so `import gslbench` imports neither torch nor faiss.

Four of the steps share their name with the module that implements them (`gslbench.train`,
`gslbench.encode`, `gslbench.bench`, `gslbench.report`). Those modules are callable: calling one
calls the API function of its name (`gslbench.train(config)` is `gslbench.api.train(config)`),
and its attributes stay the module's (`gslbench.bench.run_grid`), however it was imported.
"""

import importlib
import os
import sys
import types
from typing import Any

# OpenMP threads that spin while waiting (the default) slow faiss's small k-means fits several
# times over when the cores are shared (measured: an OPQ run 26 s spinning, 6 s passive, on a
# loaded 2-core machine). Must be set before torch or faiss load the OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# name -> the module that defines it
_EXPORTS = {
    "RunConfig": "gslbench.config",
    "Method": "gslbench.methods.base",
    "evaluate": "gslbench.api",
    "tune": "gslbench.api",
    "load_results": "gslbench.api",
    "GradientSnappingLayer": "gslbench.methods.snapping",
    "snap_gradient": "gslbench.methods.snapping",
}
_STEP_MODULES = ("train", "encode", "bench", "report")  # callable modules, see above
__all__ = sorted([*_EXPORTS, *_STEP_MODULES])


class _StepModule(types.ModuleType):
    """A step's module that is also its API function: calling it calls `gslbench.api.NAME`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        api = importlib.import_module("gslbench.api")
        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    """The `gslbench` package: makes each step module callable as the import system binds it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _STEP_MODULES and type(value) is types.ModuleType:
            value.__class__ = _StepModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _STEP_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gslbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
