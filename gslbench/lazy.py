"""Modules loaded on first use, so that the command line starts without torch and faiss.

`torch = lazy_import("torch")` at the top of a module stands for `import torch`: the real module
is imported the first time an attribute of it is read (`torch.zeros`), then every read goes to
it. Importing the registries (methods, quantizers, data sets), the configuration and the CLI
therefore loads neither torch (about 1 s) nor faiss; a step loads them when it runs. A class
statement that subclasses a torch class (`class Net(nn.Module)`) imports torch when its module is
imported: such modules are imported by the steps, never by the registries.

The first read may come from several threads at once (the scoring thread pool): the import runs
under the stand-in's lock, so no thread is handed a module another thread is still
initialising (`sys.modules` holds a module from the start of its import, not from its end).
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType
from typing import Any


class LazyModule:
    """A stand-in for the module `name`, imported when an attribute is first read."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None
        self._lock = threading.Lock()

    def _load(self) -> ModuleType:
        module = self._module
        if module is None:
            with self._lock:
                if self._module is None:
                    self._module = importlib.import_module(self._name)
                module = self._module
        return module

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._load(), attribute)

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        return f"<lazily imported module {self._name!r}>"


def lazy_import(name: str) -> Any:
    """The module `name` (e.g. "torch", "torch.nn.functional", "faiss"), imported on first use."""
    return LazyModule(name)
