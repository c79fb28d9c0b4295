"""Alembic environment: migrates the database named by DATABASE_URL to the models' schema."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from services.common.db import sqlalchemy_url
from services.common.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = context.config.attributes.get("database_url") or os.environ["DATABASE_URL"]
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, compare_server_default=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
