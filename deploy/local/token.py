"""`make token CLIENT=<id>`: print a bearer token the local stack accepts for that client."""

from __future__ import annotations

import argparse
import sys

from deploy.local import webhooks
from deploy.local.keys import mint_token
from deploy.local.stack import StackSettings
from services.api.auth import DEFAULT_MAX_LIFETIME_SECONDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("client_id", nargs="?", default="demo")
    parser.add_argument(
        "--hours",
        type=float,
        default=DEFAULT_MAX_LIFETIME_SECONDS / 3600,
        help="validity in hours (default and most the api accepts by default: 24)",
    )
    parser.add_argument(
        "--webhook-secret",
        action="store_true",
        help="print the client's current webhook signing secret instead of a token (read "
        "from the running stack's database: `secret show` of `make webhooks`)",
    )
    args = parser.parse_args()
    if args.webhook_secret:
        sys.exit(webhooks.main(["secret", "show", args.client_id]))
    settings = StackSettings()
    print(mint_token(settings.state_dir, args.client_id, ttl_seconds=int(args.hours * 3600)))


if __name__ == "__main__":
    main()
