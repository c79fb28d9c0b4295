"""Fixtures several e2e modules share (pytest finds them here; nothing imports this)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer


@pytest.fixture
def hook_receiver() -> Iterator[HTTPServer]:
    """A webhook receiver on loopback that answers every POST to /hook with 200."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.expect_request("/hook", method="POST").respond_with_data("ok")
    server.start()
    yield server
    server.clear()
    server.stop()
