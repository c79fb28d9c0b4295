"""`make webhooks ARGS="..."`: the notifier's operator command on the local stack.

    make webhooks ARGS="secret rotate acme --overlap-hours 24"
    make webhooks ARGS="secret list acme"
    make webhooks ARGS="secret show acme"     # also: make webhook-secret CLIENT=acme
    make webhooks ARGS="dead --client acme"

The same as `python -m services.notifier.admin ...` with DATABASE_URL (the owner's) and
NOTIFIER_SIGNING_KEY set to the local stack's. The embedded PostgreSQL must be running
(`make run`).
"""

from __future__ import annotations

import os
import sys

from deploy.local.keys import ensure_webhook_signing_key
from deploy.local.stack import StackSettings
from deploy.local.tenant import database_url
from services.notifier import admin


def main(argv: list[str] | None = None) -> int:
    settings = StackSettings()
    signing_key = ensure_webhook_signing_key(settings.state_dir)
    url = database_url(settings)
    if url is None:
        print("the local stack's PostgreSQL is not running: start it with `make run`")
        return 1
    os.environ["DATABASE_URL"] = url
    os.environ["NOTIFIER_SIGNING_KEY"] = signing_key
    return admin.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
