"""The one exception type for user errors (the CLI prints it as one line and exits 2), the
lookup of a name in a registry that raises it, and the close match it suggests."""

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


class GslbenchError(Exception):
    """A user error (missing file, bad shape, checksum mismatch, unknown name): no traceback."""


def lookup(registry: Mapping[str, T], name: str, what: str) -> T:
    """registry[name]; an unknown name is a user error listing the known ones."""
    try:
        return registry[name]
    except KeyError:
        raise GslbenchError(f"unknown {what} {name!r}{did_you_mean(name, registry)}; known: "
                            f"{', '.join(sorted(registry))}") from None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'gsl'?)` for the known name closest to a mistyped `name`, or else for one
    with the same letters in another order (`qp` -> `pq`); "" when none is close (difflib's ratio
    below 0.6) or an anagram."""
    known = list(known)
    close = (difflib.get_close_matches(name, known, n=1)
             or [other for other in known if sorted(other) == sorted(name)])
    return f" (did you mean {close[0]!r}?)" if close else ""
