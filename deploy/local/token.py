"""`make token CLIENT=<id>`: print a bearer token the local stack accepts for that client."""

from __future__ import annotations

import argparse

from deploy.local.keys import ensure_webhook_signing_key, mint_token
from deploy.local.stack import StackSettings
from services.common.auth import DEFAULT_MAX_LIFETIME_SECONDS
from services.notifier.signing import client_secret


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
        help="print the client's webhook signing secret instead of a token",
    )
    args = parser.parse_args()
    settings = StackSettings()
    if args.webhook_secret:
        key = ensure_webhook_signing_key(settings.state_dir)
        print(client_secret(key, args.client_id))
        return
    print(mint_token(settings.state_dir, args.client_id, ttl_seconds=int(args.hours * 3600)))


if __name__ == "__main__":
    main()
