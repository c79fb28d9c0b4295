"""NATS users: one per service, each allowed only the subjects it uses (least privilege).

The table below is the whole truth. `auth_config` renders it as the `authorization` block of
nats-server's config: the local stack (deploy/local/stack.py) starts NATS with it, and
`python -m deploy.nats_users` writes it to deploy/k8s/base/nats/auth.conf (committed; a test
fails when it is stale). Passwords are never in it: each is read from the server's
environment, NATS_PASSWORD_<USER> (a Secret in Kubernetes, the state folder locally).

What each subject is for:
- `callbacks.*`: the services' messages (services/common/bus.py, proto/.../events.proto).
- `$JS.API.STREAM.CREATE|UPDATE.<stream>`: only the dispatcher creates and updates streams.
- `$JS.API.CONSUMER.INFO|CREATE.<stream>.<durable>[.<filter>]`: a service looks up, and creates
  if missing (first start, a NATS that lost its store), its own durable consumer only.
- `$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>`: pull requests (fetch) on it;
  `$JS.ACK.<stream>.<durable>.>`: ack, nak and term of what it fetched.
- `_INBOX.<user>.>`: the only inboxes a user may subscribe to; each service's client uses that
  prefix (nats-py `inbox_prefix`), so replies to one service (JetStream API answers, fetched
  messages) cannot be read by another.
No user may subscribe to `callbacks.>` (reading messages bypassing the consumers), publish to
another's consumer, or use any other `$JS.API` subject (delete, purge, direct get, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from services.common import bus

K8S_AUTH_CONFIG = Path(__file__).resolve().parent / "k8s" / "base" / "nats" / "auth.conf"
JS_API = "$JS.API"


@dataclass(frozen=True)
class NatsUser:
    name: str
    # Subjects it may publish to and subscribe to; None: everything (the local admin only).
    publish: tuple[str, ...] | None
    subscribe: tuple[str, ...] | None
    # Only in the local stack (tests and the developer's `nats` CLI), never in the manifests.
    local_only: bool = False

    @property
    def password_variable(self) -> str:
        return f"NATS_PASSWORD_{self.name.upper()}"

    @property
    def inbox(self) -> str:
        return f"_INBOX.{self.name}.>"


def consumes(consumer: bus.Consumer) -> tuple[str, ...]:
    """What a service needs to use its own durable pull consumer."""
    stream, durable = consumer.stream.name, consumer.durable
    return (
        f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
        # nats-py creates a named consumer with its filter subject in the request's subject.
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    )


def manages_streams(streams: Iterable[bus.Stream]) -> tuple[str, ...]:
    return tuple(
        f"{JS_API}.STREAM.{action}.{stream.name}"
        for stream in streams
        for action in ("CREATE", "UPDATE")
    )


def _user(name: str, publish: Iterable[str]) -> NatsUser:
    subjects = tuple(publish)
    return NatsUser(name, subjects, (f"_INBOX.{name}.>",))


USERS: tuple[NatsUser, ...] = (
    _user(
        "dispatcher",
        (
            bus.SUBJECT_DIAL,
            f"{bus.SUBJECT_EVENTS}.>",
            *manages_streams(bus.STREAMS),
            *consumes(bus.CONSUMER_DISPATCHER),
            # The consumer-lag gauge reads every consumer's state (not their messages).
            *(
                f"{JS_API}.CONSUMER.INFO.{c.stream.name}.{c.durable}"
                for c in bus.CONSUMERS
                if c != bus.CONSUMER_DISPATCHER
            ),
        ),
    ),
    _user(
        "dialer",
        (
            bus.SUBJECT_CALL_BATCH,
            # Requests a dialer has no room for are passed on to the others.
            bus.SUBJECT_DIAL,
            *consumes(bus.CONSUMER_DIALER),
        ),
    ),
    _user("notifier", consumes(bus.CONSUMER_NOTIFIER)),
    # Operators' read-only view (`nats stream report`, `nats consumer report` with
    # `--inbox-prefix _INBOX.monitor`): streams' and consumers' state, never a message.
    _user(
        "monitor",
        (
            f"{JS_API}.INFO",
            f"{JS_API}.STREAM.NAMES",
            f"{JS_API}.STREAM.LIST",
            f"{JS_API}.STREAM.INFO.*",
            f"{JS_API}.CONSUMER.NAMES.*",
            f"{JS_API}.CONSUMER.LIST.*",
            f"{JS_API}.CONSUMER.INFO.*.*",
        ),
    ),
    # The local stack's superuser: tests that watch or inject messages, the `nats` CLI.
    NatsUser("admin", None, None, local_only=True),
)
# The api has no NATS user: it never talks to NATS.
SERVICE_USERS = ("dispatcher", "dialer", "notifier")


def user(name: str) -> NatsUser:
    return next(u for u in USERS if u.name == name)


def users_for(*, local: bool) -> tuple[NatsUser, ...]:
    return tuple(u for u in USERS if local or not u.local_only)


def _allow(kind: str, subjects: tuple[str, ...]) -> list[str]:
    return [
        f"        {kind}: {{",
        "          allow: [",
        *(f"            {json.dumps(subject)}" for subject in subjects),
        "          ]",
        "        }",
    ]


def auth_config(*, local: bool) -> str:
    """The `authorization` block of nats-server's config for these users (each password from
    the environment variable NATS_PASSWORD_<USER>)."""
    lines = [
        "# Generated by deploy/nats_users.py from its table of users: do not edit by hand.",
        "# Each password comes from the server's environment (NATS_PASSWORD_<USER>).",
        "authorization {",
        "  users = [",
    ]
    for entry in users_for(local=local):
        lines += [
            "    {",
            f"      user: {entry.name}",
            f"      password: ${entry.password_variable}",
        ]
        if entry.publish is not None and entry.subscribe is not None:
            lines += [
                "      permissions: {",
                *_allow("publish", entry.publish),
                *_allow("subscribe", entry.subscribe),
                "      }",
            ]
        lines.append("    }")
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=K8S_AUTH_CONFIG)
    args = parser.parse_args(argv)
    args.output.write_text(auth_config(local=False))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
