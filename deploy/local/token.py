"""`make token CLIENT=<id>`: print a bearer token the local stack accepts for that client."""

from __future__ import annotations

import argparse

from deploy.local.keys import mint_token
from deploy.local.stack import StackSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("client_id", nargs="?", default="demo")
    parser.add_argument("--days", type=int, default=30, help="validity in days")
    args = parser.parse_args()
    settings = StackSettings()
    print(mint_token(settings.state_dir, args.client_id, ttl_seconds=args.days * 24 * 3600))


if __name__ == "__main__":
    main()
