"""Modules loaded on first use, so that the command line starts without torch and faiss.

`torch = lazy_import("torch")` at the top of a module stands for `import torch`: the real module
is imported the first time an attribute of it is read (`torch.zeros`), then every read goes to
it. Importing the registries (methods, quantizers, data sets), the configuration and the CLI
therefore loads neither torch (about 1 s) nor faiss; a step loads them when it runs. A class
statement that subclasses a torch class (`class Net(nn.Module)`) imports torch when its module is
imported: such modules are imported by the steps, never by the registries.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """A stand-in for the module `name`, imported when an attribute is first read."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def _load(self) -> ModuleType:
        # import_module, not sys.modules: a module another thread is still importing is there
        # half-initialised; import_module waits for that import to finish
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return self._module

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._load(), attribute)

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        return f"<lazily imported module {self._name!r}>"


def lazy_import(name: str) -> Any:
    """The module `name` (e.g. "torch", "torch.nn.functional", "faiss"), imported on first use."""
    return LazyModule(name)
