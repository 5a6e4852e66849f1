"""Methods, quantizers and data sets from other packages, found through entry points.

A package declares, e.g. in its setup.cfg,

    [options.entry_points]
    gslbench.methods =
        mymethod = mypkg.mymethod:MyMethod

and once it is installed `--method mymethod` works in train, bench, tune and the report like a
built-in method: built-ins and plugins go through one registry (`gslbench.methods.METHODS`,
`gslbench.quantizers.QUANTIZERS`, `gslbench.data.DATASETS`). `gslbench.config`, when it is first
imported (before the command line builds its options), hands the three registries, once their
modules are loaded, to `register_plugins`, which adds the plugins to them: a plugin module may
import any of gslbench but `gslbench.config`, whose run configuration is being built from the
knobs. Each registry says what it refuses (its `plugin_problem`, using `named_subclass` for
classes); this module imports none of gslbench, so that the registries can import it. The entry
point's name is the registered name and must equal the object's `name`. A plugin that cannot be
used (it does not import, its name is a built-in's, it is not the right kind of object, a knob
has no valid default) is skipped with one warning line naming it; the built-ins are never
replaced.

`GSLBENCH_DISABLE_PLUGINS=1` in the environment loads no plugin at all (as pytest's
PYTEST_DISABLE_PLUGIN_AUTOLOAD): gslbench's own test suite sets it, so that it passes whatever
plugins are installed, and a benchmark can be reproduced with the built-ins alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)

DISABLE = "GSLBENCH_DISABLE_PLUGINS"  # set (to anything but "" or "0"): no plugin is loaded
# what is wrong with a loaded entry point (its name, the object), or None (a registry's check)
Problem = Callable[[str, Any], str | None]


def load_plugins(group: str, builtins: Mapping[str, Any], problem: Problem) -> dict[str, Any]:
    """The usable plugins of entry-point group `group`, by name (sorted): each loaded, and kept
    unless its name is in `builtins`, or declared twice, or `problem(name, object)` says what is
    wrong with it (None: nothing)."""
    plugins: dict[str, Any] = {}
    declared = sorted(entry_points(group=group), key=lambda entry_point: entry_point.name)
    for entry_point in declared:
        name = entry_point.name
        try:
            loaded = entry_point.load()
        except Exception as exc:  # whatever the plugin's import raises, it is the plugin's fault
            why = f"cannot import it: {type(exc).__name__}: {' '.join(str(exc).split())}"
        else:
            why = (f"{name!r} is a built-in name" if name in builtins
                   else f"{name!r} is declared twice" if name in plugins
                   else problem(name, loaded))
        if why:
            log.warning("plugin %r (%s = %s) skipped: %s", name, group, entry_point.value, why)
            plugins.pop(name, None)
            continue
        plugins[name] = loaded
    return plugins


def register_plugins(registries: Iterable[tuple[str, dict[str, Any], Problem]]) -> None:
    """Add to each registry of `registries`, given as (entry-point group, the registry's dict of
    built-ins by name, its `plugin_problem`), the group's usable plugins (each group once; none
    when the environment variable `DISABLE` is set)."""
    if os.environ.get(DISABLE, "") not in ("", "0"):
        return
    for group, registered, problem in registries:
        if group not in _registered:
            _registered.add(group)
            registered.update(load_plugins(group, registered, problem))


_registered: set[str] = set()


def named_subclass(name: str, loaded: Any, base: type) -> str | None:
    """What is wrong with `loaded` as the plugin class `name`: not a subclass of `base`, or a
    `name` attribute other than the entry point's name; None when nothing is."""
    if not (isinstance(loaded, type) and issubclass(loaded, base)):
        return f"it is not a subclass of {base.__module__}.{base.__qualname__}"
    if getattr(loaded, "name", None) != name:
        return f"its name is {getattr(loaded, 'name', None)!r}, not the entry point's {name!r}"
    return None
