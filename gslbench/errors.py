"""The one exception type for user errors (the CLI prints it as one line and exits 2), and the
lookup of a name in a registry that raises it."""

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


class GslbenchError(Exception):
    """A user error (missing file, bad shape, checksum mismatch, unknown name): no traceback."""


def lookup(registry: Mapping[str, T], name: str, what: str) -> T:
    """registry[name]; an unknown name is a user error listing the known ones."""
    try:
        return registry[name]
    except KeyError:
        raise GslbenchError(f"unknown {what} {name!r}; known: {', '.join(sorted(registry))}") from None
