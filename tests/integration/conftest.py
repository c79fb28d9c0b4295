"""Fixtures of the integration tier: a PostgreSQL of its own for the session, and a database
per test.

The server is the embedded one (pgserver, as `make run` runs it), or the one DATABASE_URL
names when pytest starts with it set (its user needs CREATEDB). The schema is migrated once,
into a template database; each test that wants it gets a fresh copy (`CREATE DATABASE ...
TEMPLATE`). No NATS, Envoy or service runs for these tests: the tests of this tier that need
another real part (nats-server, sipp, Kamailio) start it themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer, embedded_server, migrated_template
from tests.support.stacks import StateDirFactory


@pytest.fixture(scope="session")
def postgres(
    make_state_dir: StateDirFactory, database_url_setting: str | None
) -> Iterator[PostgresServer]:
    """The session's PostgreSQL server."""
    if database_url_setting is not None:
        yield PostgresServer.at(database_url_setting)
        return
    with embedded_server(make_state_dir("postgres")) as server:
        yield server


@pytest.fixture(scope="session")
def template_database(postgres: PostgresServer) -> Iterator[str]:
    """The name of a database with the schema at head, migrated once per session."""
    name = migrated_template(postgres)
    yield name
    postgres.drop_database(name)


@pytest.fixture
def empty_database(postgres: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database."""
    name = postgres.create_database(prefix="empty")
    yield postgres.url(name)
    postgres.drop_database(name)


@pytest.fixture
def migrated_database(postgres: PostgresServer, template_database: str) -> Iterator[str]:
    """The URL of a new database with the schema at head, that no other test looks at."""
    name = postgres.create_database(template=template_database)
    yield postgres.url(name)
    postgres.drop_database(name)
