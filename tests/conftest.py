"""Fixtures of every tier: the scrubbed environment and state folders for servers.

Only pytest loads this file; helpers live in tests/support/. The whole system is started by
tests/e2e/conftest.py, the integration tier's PostgreSQL by tests/integration/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stacks import StateDirFactory

# A server named by DATABASE_URL serves the integration tier (tests/integration/conftest.py);
# the stacks of the other tiers must not inherit it.
_DATABASE_URL = os.environ.get("DATABASE_URL") or None
# Scrub what a developer's shell may have set, so that tests start from the defaults.
for _name in ("DATABASE_URL", "REST_PORT", "STATE_DIR", "API_GRPC_PORT", "NATS_PORT"):
    os.environ.pop(_name, None)
# pgserver wants a private runtime dir (mode 0700) for its lock file.
os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="xdg-")


@pytest.fixture(scope="session")
def database_url_setting() -> str | None:
    """DATABASE_URL as the shell that started pytest had it (None: unset)."""
    return _DATABASE_URL


@pytest.fixture(scope="session")
def make_state_dir() -> Iterator[StateDirFactory]:
    """Fresh state folders for stacks, outside pytest's own temp root.

    The embedded PostgreSQL runs as another system user and needs to traverse the path;
    pytest resets its temp root to mode 0700 whenever a pytest session starts.
    """
    root = Path(tempfile.mkdtemp(prefix="callback-scheduler-tests-"))
    root.chmod(0o755)
    counter = 0

    def make(name: str) -> Path:
        nonlocal counter
        counter += 1
        path = root / f"{name}-{counter}"
        path.mkdir()
        return path

    yield make
    shutil.rmtree(root, ignore_errors=True)
