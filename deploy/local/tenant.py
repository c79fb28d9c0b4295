"""`make tenant ARGS="..."`: the operator's tenant command on the local stack's database.

    make tenant ARGS="show acme"
    make tenant ARGS="caller-id add acme +15551230000"
    make tenant ARGS="quotas acme --max-in-progress 20 --calls-per-second 5"
    echo s3cret | make tenant ARGS="account add acme 7 --username acme-7 --password-stdin"

The same as `python -m services.api.admin ...` with DATABASE_URL set (on Kubernetes: see
the README). The embedded PostgreSQL must be running (`make run`).
"""

from __future__ import annotations

import os
import sys

from deploy.local.stack import EMBEDDED_DATABASE, StackSettings, _set_runtime_dir
from services.api import admin


def database_url(settings: StackSettings) -> str | None:
    """DATABASE_URL, or the running embedded PostgreSQL's (None: it is not running)."""
    if settings.database_url:
        return settings.database_url
    _set_runtime_dir(settings.state_dir)  # as the launcher does, before pgserver is imported
    from pgserver.utils import PostmasterInfo  # only the embedded default needs it

    running = PostmasterInfo.read_from_pgdata(settings.state_dir / "pgdata")
    return None if running is None else str(running.get_uri(database=EMBEDDED_DATABASE))


def main() -> int:
    url = database_url(StackSettings())
    if url is None:
        print("the local stack's PostgreSQL is not running: start it with `make run`")
        return 1
    os.environ["DATABASE_URL"] = url
    return admin.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
