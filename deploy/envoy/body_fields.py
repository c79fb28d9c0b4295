"""The JSON keys each request body may have, from the proto, as Lua tables for the gateway's
unknown-field check (unknown_fields.lua).

Every RPC whose `google.api.http` rule takes a body ("*") gets a route (method and path
pattern) and its request message; every message reachable from one gets its keys (the proto
name and the JSON name, as the transcoder accepts both). A PUT also accepts the fields of
the object it answers with: a client may send back what it read (the published PUT of a
queue lists the queue's fields as "Request field"), and those fields are ignored, as before.
"""

from __future__ import annotations

import re

from google.api import annotations_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from scheduler.v1 import scheduler_pb2

# Messages whose JSON is any value (or any object): nothing inside them is checked.
_ANY_JSON = {
    "google.protobuf.Value",
    "google.protobuf.Struct",
    "google.protobuf.ListValue",
    "google.protobuf.Any",
}
_VARIABLE = re.compile(r"\{[^}]*\}")
_LUA_MAGIC = re.compile(r"([\^$()%.\[\]*+\-?])")

# The field violation's description, and the dynamic metadata namespace that carries the
# field's name from the Lua filter to the local reply's body.
DESCRIPTION = "unknown field: this request has no such field (see the OpenAPI document)"
METADATA_NAMESPACE = "callback_scheduler.unknown_fields"

Kind = bool | str  # True: any value; a message's full name: that message (or an array of it)


def _kind(field: FieldDescriptor) -> Kind:
    message = field.message_type
    if message is None or message.full_name in _ANY_JSON or message.GetOptions().map_entry:
        return True
    if message.full_name.startswith("google.protobuf."):  # wrappers, Timestamp, Duration
        return True
    return str(message.full_name)


def _keys(message: Descriptor) -> dict[str, Kind]:
    keys: dict[str, Kind] = {}
    for field in message.fields:
        keys[field.name] = keys[field.json_name] = _kind(field)
    return keys


def _path_pattern(template: str) -> str:
    """A Lua pattern of the path (without query and trailing "/") for an http template."""
    parts = _VARIABLE.split(template)
    escaped = [_LUA_MAGIC.sub(r"%\1", part) for part in parts]
    return "^" + "[^/]+".join(escaped).rstrip("/") + "$"


def body_rules() -> tuple[list[tuple[str, str, str]], dict[str, dict[str, Kind]]]:
    """(routes: (HTTP method, Lua path pattern, request message), keys of every message)."""
    service = scheduler_pb2.DESCRIPTOR.services_by_name["TaskScheduler"]
    routes: list[tuple[str, str, str]] = []
    messages: dict[str, dict[str, Kind]] = {}

    def add(message: Descriptor, extra: dict[str, Kind] | None = None) -> None:
        keys = {**(extra or {}), **_keys(message)}
        name = str(message.full_name)
        messages[name] = {**messages.get(name, {}), **keys}
        for field in message.fields:
            kind = _kind(field)
            if isinstance(kind, str) and kind not in messages and field.message_type:
                add(field.message_type)

    for method in service.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        if rule.body != "*":
            continue
        verb = rule.WhichOneof("pattern")
        assert verb is not None
        template = getattr(rule, verb)
        # Read-only fields of the answered object: accepted on a PUT, and ignored.
        extra: dict[str, Kind] | None = (
            dict.fromkeys(_keys(method.output_type), True) if verb == "put" else None
        )
        # A request message of its own per RPC: its keys are not shared with another.
        add(method.input_type, extra)
        routes.append((verb.upper(), _path_pattern(template), str(method.input_type.full_name)))
    return routes, messages


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_tables() -> str:
    """The Lua source of BODY_ROUTES, MESSAGES and the two constants the script uses."""
    routes, messages = body_rules()
    lines = ["BODY_ROUTES = {"]
    for method, pattern, message in routes:
        lines.append(
            f"  {{ {_lua_string(method)}, {_lua_string(pattern)}, {_lua_string(message)} }},"
        )
    lines.append("}")
    lines.append("MESSAGES = {")
    for name, keys in sorted(messages.items()):
        lines.append(f"  [{_lua_string(name)}] = {{")
        for key, kind in sorted(keys.items()):
            value = "true" if kind is True else _lua_string(str(kind))
            lines.append(f"    [{_lua_string(key)}] = {value},")
        lines.append("  },")
    lines.append("}")
    lines.append(f"UNKNOWN_FIELD_NAMESPACE = {_lua_string(METADATA_NAMESPACE)}")
    lines.append(f"UNKNOWN_FIELD_DESCRIPTION = {_lua_string(DESCRIPTION)}")
    return "\n".join(lines) + "\n"
