"""Fixtures shared by the data and download tests."""

from __future__ import annotations

import pytest
from datafakes import FileServer


@pytest.fixture
def server():
    """A local HTTP server on 127.0.0.1 (Range requests, injectable faults) for the whole test."""
    with FileServer() as running:
        yield running
