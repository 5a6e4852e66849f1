"""How `gslbench tune` stops on a signal: SIGTERM and Ctrl-C set a flag (`stop_on`) that the
search checks between steps (`check_stop`: each refit, each seed, each trial) and turns into
`Interrupted` there, instead of raising from the signal handler, where the exception could land
in any callback (SQLAlchemy's garbage-collection hooks swallow it, and the tune then ran on to
its end as if no Ctrl-C had come). Helper processes start with Ctrl-C ignored (`ignored`): the
tune process stops them.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Interrupted(KeyboardInterrupt):
    """tune stopped by a signal (`signum`) that set the stop flag, raised where it is checked."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_STOP: list[int] = []  # the signals that asked this process to stop


def _request_stop(signum: int, frame: Any) -> None:
    """The handler: set the flag, raise nothing (raising here could land in any callback, e.g.
    SQLAlchemy's garbage-collection hooks, which swallow it)."""
    _STOP.append(signum)


def check_stop() -> None:
    """Raise `Interrupted` if a signal asked this process to stop (checked between steps)."""
    if _STOP:
        raise Interrupted(_STOP[0])


@contextlib.contextmanager
def stop_on(*signums: int) -> Iterator[None]:
    """While inside, in the main thread, `signums` set the stop flag instead of running their
    handlers; the handlers are put back and the flag cleared after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _STOP.clear()
    previous = {signum: signal.signal(signum, _request_stop) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _STOP.clear()


@contextlib.contextmanager
def ignored(signum: int) -> Iterator[None]:
    """`signum` ignored while inside (in the main thread), so processes started meanwhile begin
    with it ignored (an ignored signal stays so across exec, and Python keeps it so)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signum, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signum, previous)
