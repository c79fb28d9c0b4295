"""The OpenAPI 3 document of the REST API, generated from the proto so that it cannot drift.

`python -m deploy.openapi.generate` (`make openapi`) reads the descriptor set `make gen` builds
(gen/scheduler.pb) and writes deploy/openapi/scheduler.yaml. A unit test fails when the
committed document differs from what this renders, so a change to the proto's messages or
http rules has to come with the regenerated document.

From the proto: every path and method (the google.api.http rules), path and query parameters,
request bodies, response objects (field names and JSON types as Envoy's transcoder prints
them) and the proto comments as descriptions. Added here, because the proto cannot say it:
what the REST layer changes (bare arrays for `items` lists, the trailing slash the spec
publishes, the google.rpc.Status error body, bearer auth) and the limits the api service
enforces (services/api/validation.py), keyed by message and field; a key that names no
field of the proto is an error, so the table cannot go stale either.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from services.api import validation

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR = ROOT / "gen" / "scheduler.pb"
DOCUMENT = Path(__file__).with_name("scheduler.yaml")
PACKAGE = "scheduler.v1"
SERVICE = "TaskScheduler"

Schema = dict[str, Any]

# What each RPC does, in the words of the published spec (every RPC needs one).
SUMMARIES = {
    "CreateQueue": "Create a task queue (task_scheduler)",
    "ListQueues": "List the client's queues (keyset paging by id)",
    "GetQueue": "Read one queue",
    "UpdateQueue": "Update a queue: a partial update of comment, status, concurrent_task_limit",
    "DeleteQueue": "Delete a queue and its tasks",
    "CreateTasks": "Add 1..1000 tasks to a queue, all or nothing",
    "ListTasks": "List a queue's tasks (keyset paging by id; optional filters: status, number, "
    "created-time range)",
    "GetTask": "Read one task",
    "UpdateTask": "Reschedule a scheduled or delayed task: a partial update of start_time_utc, "
    "try_count, try_again_pause, try_count_caller, try_again_pause_caller, url_* and "
    "callback_params",
    "ListTaskCalls": "The call records of all the task's attempts, newest first",
    "DeleteTask": "Delete one task",
    "GetCallHistory": "Read the record of one call (a task's cdr)",
    "CreateInterval": "Create a calling window (interval)",
    "ListIntervals": "List the client's intervals (keyset paging by id)",
    "GetInterval": "Read one interval",
    "UpdateInterval": "Update an interval: a partial update of name, timezone, conditions",
    "DeleteInterval": "Delete an interval that no queue names",
}

UTC_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"
UTC_TIME_OR_EMPTY = r"^([0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2})?$"
PHONE: Schema = {"pattern": r"^\+?[0-9*#]+$", "minLength": 1, "maxLength": 32}
URL: Schema = {
    "maxLength": 2048,
    "pattern": r"^(https?://.+)?$",
    "description": 'An absolute http:// or https:// URL; "" for none.',
}
UINT32_MAX = 2**32 - 1
INT32 = {"minimum": -(2**31), "maximum": 2**31 - 1}
QUEUE_STATUS = ["on", "off"]
TIME_OF_DAY = r"^(([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9])?$"
END_TIME_OF_DAY = r"^(([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]|24:00:00)?$"
WALL_TIME = r"^([0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}(:[0-9]{2})?)?$"
TIMEZONE: Schema = {"minLength": 1, "maxLength": validation.MAX_TIMEZONE_LENGTH}
# A condition's parts, the same limits both ways (0 and "" are absent parts).
CONDITION: dict[str, Schema] = {
    "IntervalCondition.start_dow": {"minimum": 0, "maximum": 7},
    "IntervalCondition.end_dow": {"minimum": 0, "maximum": 7},
    "IntervalCondition.start_mday": {"minimum": 0, "maximum": 31},
    "IntervalCondition.end_mday": {"minimum": 0, "maximum": 31},
    "IntervalCondition.month": {"minimum": 0, "maximum": 12},
}
TASK_STATUS = ["scheduled", "executed", "delayed", "finished"]

# Limits the api service enforces (services/api/validation.py), by "Message.field". Applied to
# request messages; response messages get only the ones under RESPONSE_CONSTRAINTS.
REQUEST_CONSTRAINTS: dict[str, Schema] = {
    "CreateQueueRequest.name": {"maxLength": 255},
    "CreateQueueRequest.comment": {"maxLength": 4000},
    "CreateQueueRequest.status": {"enum": QUEUE_STATUS, "default": "off"},
    "CreateQueueRequest.concurrent_task_limit": {
        "minimum": 1,
        "maximum": validation.MAX_CONCURRENT_TASK_LIMIT,
        "default": 1,
    },
    "CreateQueueRequest.interval_id": {"default": 0},
    "UpdateQueueRequest.comment": {"maxLength": 4000},
    "UpdateQueueRequest.status": {"enum": QUEUE_STATUS},
    "UpdateQueueRequest.concurrent_task_limit": {
        "minimum": 1,
        "maximum": validation.MAX_CONCURRENT_TASK_LIMIT,
    },
    "ListQueuesRequest.limit": {"minimum": 0, "maximum": validation.MAX_PAGE},
    "ListIntervalsRequest.limit": {"minimum": 0, "maximum": validation.MAX_PAGE},
    "CreateIntervalRequest.name": {"maxLength": 255},
    "CreateIntervalRequest.timezone": TIMEZONE,
    "CreateIntervalRequest.conditions": {"minItems": 1, "maxItems": validation.MAX_CONDITIONS},
    "UpdateIntervalRequest.name": {"maxLength": 255},
    "UpdateIntervalRequest.timezone": TIMEZONE,
    "UpdateIntervalRequest.conditions": {"maxItems": validation.MAX_CONDITIONS},
    **CONDITION,
    "IntervalCondition.start_time": {"pattern": TIME_OF_DAY},
    "IntervalCondition.end_time": {"pattern": END_TIME_OF_DAY},
    "IntervalCondition.start_datetime": {"pattern": WALL_TIME},
    "IntervalCondition.end_datetime": {"pattern": WALL_TIME},
    "ListTasksRequest.limit": {"minimum": 0, "maximum": validation.MAX_PAGE},
    "ListTasksRequest.status": {"enum": TASK_STATUS},
    "ListTasksRequest.number": PHONE,
    "ListTasksRequest.created_from_utc": {
        "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}(:[0-9]{2})?$"
    },
    "ListTasksRequest.created_to_utc": {
        "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}(:[0-9]{2})?$"
    },
    "CreateTasksRequest.tasks": {"minItems": 1, "maxItems": validation.MAX_TASKS_PER_REQUEST},
    "TaskInput.name": {"maxLength": 255},
    "TaskInput.a_number": PHONE,
    "TaskInput.b_number": PHONE,
    "TaskInput.extension_id": {"minimum": 0, "default": 0},
    "TaskInput.try_count": {"minimum": 1, "maximum": 50, "default": 1},
    "TaskInput.try_count_caller": {"minimum": 0, "maximum": validation.MAX_TRY_COUNT, "default": 0},
    "TaskInput.try_again_pause_caller": {
        "minimum": 0,
        "maximum": validation.MAX_TRY_AGAIN_PAUSE_CALLER,
        "default": 0,
    },
    "TaskInput.try_again_pause": {
        "oneOf": [
            {"type": "integer", "minimum": 0, "maximum": validation.MAX_TRY_AGAIN_PAUSE},
            {"type": "string", "pattern": "^[0-9]+$", "maxLength": 7},
        ],
        "default": "60",
    },
    "TaskInput.url_before": URL,
    "TaskInput.url_before_again": URL,
    "TaskInput.url_success": URL,
    "TaskInput.url_after": URL,
    "TaskInput.start_time_utc": {
        "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}(:[0-9]{2})?$"
    },
    # The part of the rule (validation._display_name) a portable JSON Schema regex can say: no
    # control characters, no line or paragraph separators. The description gives the rest.
    "CallbackParams.caller_id_name": {
        "maxLength": 64,
        "pattern": r"^[^\u0000-\u001f\u007f-\u009f\u2028\u2029]*$",
    },
    "CallbackParams.caller_id_number": {**PHONE, "pattern": r"^(\+?[0-9*#]+)?$", "minLength": 0},
    "CallbackParams.extended_a_numbers": {"maxItems": validation.MAX_EXTENDED_A_NUMBERS},
    "CallbackParams.extended_a_numbers[]": PHONE,
    "CallbackParams.call_duration": {
        "minimum": 0,
        "maximum": validation.MAX_CALL_DURATION,
        "default": 0,
    },
    # 0 (the dialer's own) or MIN..MAX seconds.
    "CallbackParams.ring_timeout": {
        "anyOf": [
            {"enum": [0]},
            {"minimum": validation.MIN_RING_TIMEOUT, "maximum": validation.MAX_RING_TIMEOUT},
        ],
        "default": 0,
    },
    "GetCallHistoryRequest.call_uuid": {"format": "uuid"},
    "UpdateTaskRequest.try_count": {"minimum": 1, "maximum": 50},
    "UpdateTaskRequest.try_count_caller": {"minimum": 0, "maximum": validation.MAX_TRY_COUNT},
    "UpdateTaskRequest.try_again_pause_caller": {
        "minimum": 0,
        "maximum": validation.MAX_TRY_AGAIN_PAUSE_CALLER,
    },
    "UpdateTaskRequest.try_again_pause": {
        "oneOf": [
            {"type": "integer", "minimum": 0, "maximum": validation.MAX_TRY_AGAIN_PAUSE},
            {"type": "string", "pattern": "^[0-9]+$", "maxLength": 7},
        ]
    },
    "UpdateTaskRequest.url_before": URL,
    "UpdateTaskRequest.url_before_again": URL,
    "UpdateTaskRequest.url_success": URL,
    "UpdateTaskRequest.url_after": URL,
    "UpdateTaskRequest.start_time_utc": {
        "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}(:[0-9]{2})?$"
    },
}
RESPONSE_CONSTRAINTS: dict[str, Schema] = {
    "Queue.status": {"enum": QUEUE_STATUS},
    "Queue.concurrent_task_limit": {"minimum": 1},
    "Queue.create_date_utc": {"pattern": UTC_TIME},
    "Queue.last_call_date": {"pattern": UTC_TIME_OR_EMPTY},
    "Task.status": {"enum": TASK_STATUS},
    "Task.finish_result": {"enum": ["", "success", "failed"]},
    "Task.try_count": {"minimum": 1, "maximum": 50},
    "Task.try_again_pause": {"pattern": "^[0-9]+$"},
    "Task.try_count_caller": {"minimum": 0, "maximum": validation.MAX_TRY_COUNT},
    "Task.try_again_pause_caller": {
        "minimum": 0,
        "maximum": validation.MAX_TRY_AGAIN_PAUSE_CALLER,
    },
    "Task.start_time_utc": {"pattern": UTC_TIME},
    "Task.create_date_utc": {"pattern": UTC_TIME},
    "CallRecord.started_utc": {"pattern": UTC_TIME},
    "CallRecord.ended_utc": {"pattern": UTC_TIME_OR_EMPTY},
    "CallLeg.role": {"enum": ["a", "b"]},
    "CallLeg.ring_started_utc": {"pattern": UTC_TIME_OR_EMPTY},
    "CallLeg.answered_utc": {"pattern": UTC_TIME_OR_EMPTY},
    "CallLeg.ended_utc": {"pattern": UTC_TIME_OR_EMPTY},
    **CONDITION,
    "IntervalCondition.start_time": {"pattern": TIME_OF_DAY},
    "IntervalCondition.end_time": {"pattern": END_TIME_OF_DAY},
    "IntervalCondition.start_datetime": {"pattern": UTC_TIME_OR_EMPTY},
    "IntervalCondition.end_datetime": {"pattern": UTC_TIME_OR_EMPTY},
}
# Request fields without which the api answers 400.
REQUIRED = {
    "TaskInput": ["a_number", "b_number"],
    "CreateTasksRequest": ["tasks"],
    "CreateIntervalRequest": ["timezone", "conditions"],
}

_SCALARS: dict[int, Schema] = {
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: {"type": "string"},
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: {"type": "boolean"},
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: {"type": "number"},
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: {"type": "number"},
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: {"type": "integer", "format": "int32", **INT32},
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: {
        "type": "integer",
        "format": "int64",
        "minimum": 0,
        "maximum": UINT32_MAX,
    },
}
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE

ERROR_CODES = {
    "400": "Bad input: a bad field (named in the message and in BadRequest.field_violations), "
    "a wrong JSON type, malformed JSON or an unknown query parameter; for new tasks also an "
    "extension, caller id or destination the client may not use (ErrorInfo.reason "
    "EXTENSION_NOT_OWNED, CALLER_ID_NOT_ALLOWED, DESTINATION_DENIED); for a queue an "
    "interval_id that is not one of the client's intervals (INTERVAL_NOT_OWNED).",
    "401": "No token, a bad signature, an expired or revoked token, or one valid for longer "
    "than the api accepts (exp - iat, 24 h by default); the message says which.",
    "403": "The path names a client other than the token's.",
    "404": "Unknown queue, task, call or interval (including another client's), or unknown path.",
    "429": "More requests than the client's rate limit at the gateway (ErrorInfo.reason "
    "RATE_LIMITED, header Retry-After); when adding tasks also a quota of the client that "
    "would be exceeded (ErrorInfo.reason QUOTA_EXCEEDED, ErrorInfo.metadata.quota names it, "
    "e.g. max_stored_tasks; max_intervals when creating an interval). Nothing was stored.",
    "503": "PostgreSQL or the api service is unreachable; retry later.",
}
BODY_TOO_LARGE = {"413": "The request body is over 4 MiB."}
# Every operation lists 429 (the rate limit); the quotas share its description.
QUOTA_EXCEEDED = {"429": ERROR_CODES["429"]}
# The operations that count against a quota as they answer.
QUOTA_OPERATIONS = ("CreateTasks", "CreateInterval")
# The POSTs that take an Idempotency-Key (services/api/idempotency.py).
IDEMPOTENT_OPERATIONS = ("CreateQueue", "CreateTasks", "CreateInterval")
IDEMPOTENCY_KEY: Schema = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes a retry safe: the same key with the same request within 24 hours "
    "creates nothing new and answers the first response again (same ids) with the header "
    "`Idempotent-Replayed: true`; with another request it is a 422. Per client; a request "
    "that failed does not use up its key. 1 to 255 printable ASCII characters, e.g. a UUID.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
}
REPLAYED_HEADER: Schema = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored response of an earlier request with "
        "the same Idempotency-Key; absent otherwise.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
CONFLICT = {
    "409": "A conflict with the state of things (ErrorInfo.reason CONFLICT, the message says "
    "why): a task that is `executed` or `finished` cannot be changed; an interval that "
    "queues name cannot be deleted (the message names them); rarely, an Idempotency-Key "
    "that expired was being cleaned up at that moment (retry)."
}
CONFLICT_OPERATIONS = (
    "CreateQueue",
    "CreateTasks",
    "UpdateTask",
    "CreateInterval",
    "DeleteInterval",
)
IDEMPOTENCY_ERRORS = {
    "422": "The Idempotency-Key was used within 24 hours for a different request "
    "(ErrorInfo.reason IDEMPOTENCY_KEY_REUSED, the message names the key); nothing was "
    "created. Use a new key for a new request.",
}


class _Proto:
    """The messages and comments of the descriptor set, by full name."""

    def __init__(self, descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.comments: dict[str, str] = {}
        self.service: descriptor_pb2.ServiceDescriptorProto | None = None
        for file in descriptor_set.file:
            locations = {
                tuple(loc.path): " ".join(loc.leading_comments.split())
                for loc in file.source_code_info.location
                if loc.leading_comments.strip()
            }
            for index, message in enumerate(file.message_type):
                name = f"{file.package}.{message.name}"
                self.messages[name] = message
                if comment := locations.get((4, index)):
                    self.comments[name] = comment
                for number, field in enumerate(message.field):
                    if comment := locations.get((4, index, 2, number)):
                        self.comments[f"{name}.{field.name}"] = comment
            for index, service in enumerate(file.service):
                if file.package == PACKAGE and service.name == SERVICE:
                    self.service = service
                    for number, method in enumerate(service.method):
                        if comment := locations.get((6, index, 2, number)):
                            self.comments[f"{PACKAGE}.{SERVICE}.{method.name}"] = comment

    def message(self, type_name: str) -> descriptor_pb2.DescriptorProto:
        return self.messages[type_name.lstrip(".")]


def http_rules(descriptor_set: descriptor_pb2.FileDescriptorSet) -> list[tuple[str, str, str]]:
    """(RPC name, HTTP method, path template) of every google.api.http rule of the service."""
    proto = _Proto(descriptor_set)
    assert proto.service is not None, f"{PACKAGE}.{SERVICE} is not in the descriptor set"
    rules = []
    for method in proto.service.method:
        rule = method.options.Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        assert verb is not None and verb != "custom", f"{method.name} has no plain http rule"
        rules.append((method.name, verb, str(getattr(rule, verb))))
    return rules


def published_path(template: str) -> str:
    """The spec publishes collections with a trailing slash (both forms are accepted)."""
    return template if template.endswith("}") else template + "/"


def _path_params(template: str) -> list[str]:
    return [part[1:-1] for part in template.split("/") if part.startswith("{")]


class _Builder:
    def __init__(self, proto: _Proto) -> None:
        self.proto = proto
        self.schemas: dict[str, Schema] = {}
        self.used: set[str] = set()

    def _constraint(self, table: Mapping[str, Schema], key: str) -> Schema:
        if key in table:
            self.used.add(key)
            return dict(table[key])
        return {}

    def field_schema(
        self, message: str, field: descriptor_pb2.FieldDescriptorProto, *, request: bool
    ) -> Schema:
        table = REQUEST_CONSTRAINTS if request else RESPONSE_CONSTRAINTS
        short = message.rsplit(".", 1)[-1]
        key = f"{short}.{field.name}"
        if field.type == _MESSAGE:
            if field.type_name == ".google.protobuf.Value":
                item: Schema = {}  # any JSON value; the constraint table says which
            else:
                item = {"$ref": self.component(field.type_name.lstrip("."), request=request)}
        else:
            item = dict(_SCALARS[field.type])
        if field.label == _REPEATED:
            item.update(self._constraint(table, key + "[]"))
            schema: Schema = {"type": "array", "items": item}
        else:
            schema = item
        extra = self._constraint(table, key)
        if comment := self.proto.comments.get(f"{message}.{field.name}"):
            extra.setdefault("description", comment)
        if "$ref" in schema and extra:
            schema = {"allOf": [schema]}  # OpenAPI 3.0 ignores the siblings of a $ref
        schema.update(extra)
        return schema

    def object_schema(self, message: str, *, request: bool, skip: tuple[str, ...] = ()) -> Schema:
        descriptor = self.proto.message(message)
        properties = {
            f.name: self.field_schema(message, f, request=request)
            for f in descriptor.field
            if f.name not in skip
        }
        schema: Schema = {"type": "object"}
        if comment := self.proto.comments.get(message):
            schema["description"] = comment
        if request:
            # Unknown fields are ignored by the transcoder, not refused.
            if required := REQUIRED.get(descriptor.name):
                schema["required"] = required
        else:
            # The transcoder prints every field (always_print_primitive_fields).
            schema["required"] = list(properties)
            schema["additionalProperties"] = False
        schema["properties"] = properties
        return schema

    def component(self, message: str, *, request: bool) -> str:
        name = message.rsplit(".", 1)[-1]
        if request and not name.endswith("Input"):
            name += "Input"  # a message used both ways has different limits each way
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: recursion stops here
            self.schemas[name] = self.object_schema(message, request=request)
        return f"#/components/schemas/{name}"

    def response(self, message: str) -> Schema:
        if message == "google.protobuf.Empty":
            return {"type": "object", "additionalProperties": False, "properties": {}}
        descriptor = self.proto.message(message)
        fields = list(descriptor.field)
        if len(fields) == 1 and fields[0].name == "items" and fields[0].label == _REPEATED:
            # Envoy's Lua filter (deploy/envoy/bare_arrays.lua) answers the bare array.
            return {
                "type": "array",
                "items": {"$ref": self.component(fields[0].type_name.lstrip("."), request=False)},
            }
        return {"$ref": self.component(message, request=False)}

    def parameter(self, message: str, field_name: str, where: str) -> Schema:
        descriptor = self.proto.message(message)
        field = next(f for f in descriptor.field if f.name == field_name)
        schema = self.field_schema(message, field, request=True)
        description = schema.pop("description", None)
        parameter: Schema = {"name": field_name, "in": where, "required": where == "path"}
        if field_name == "client_id":
            description = "The client (tenant): the token's own client_id, or @me."
            schema.update({"minLength": 1, "maxLength": 128})
        if description:
            parameter["description"] = description
        parameter["schema"] = schema
        return parameter


def render(descriptor_set: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    """The whole OpenAPI document."""
    proto = _Proto(descriptor_set)
    assert proto.service is not None
    builder = _Builder(proto)
    paths: dict[str, dict[str, Any]] = {}
    methods = {m.name: m for m in proto.service.method}
    for name, verb, template in http_rules(descriptor_set):
        method = methods[name]
        request = method.input_type.lstrip(".")
        rule = method.options.Extensions[annotations_pb2.http]
        path_params = _path_params(template)
        operation: dict[str, Any] = {
            "operationId": name,
            "summary": SUMMARIES[name],
        }
        if comment := proto.comments.get(f"{PACKAGE}.{SERVICE}.{name}"):
            operation["description"] = comment
        parameters = [builder.parameter(request, p, "path") for p in path_params]
        errors = dict(ERROR_CODES)
        if rule.body == "*":
            body = builder.object_schema(request, request=True, skip=tuple(path_params))
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body}},
            }
            errors.update(BODY_TOO_LARGE)
        else:
            assert not rule.body, f"{name}: only body '*' or none is supported"
            query = [f.name for f in proto.message(request).field if f.name not in path_params]
            parameters += [builder.parameter(request, q, "query") for q in query]
        if name in QUOTA_OPERATIONS:
            errors.update(QUOTA_EXCEEDED)
        if name in IDEMPOTENT_OPERATIONS:
            parameters.append(IDEMPOTENCY_KEY)
            errors.update(IDEMPOTENCY_ERRORS)
        if name in CONFLICT_OPERATIONS:
            errors.update(CONFLICT)
        operation["parameters"] = parameters
        ok: dict[str, Any] = {
            "description": "OK",
            "content": {
                "application/json": {"schema": builder.response(method.output_type.lstrip("."))}
            },
        }
        if name in IDEMPOTENT_OPERATIONS:
            ok["headers"] = REPLAYED_HEADER
        responses: dict[str, Any] = {"200": ok}
        for code in sorted(errors):
            responses[code] = {"$ref": f"#/components/responses/Error{code}"}
        operation["responses"] = responses
        paths.setdefault(published_path(template), {})[verb] = operation
    unused = (set(REQUEST_CONSTRAINTS) | set(RESPONSE_CONSTRAINTS)) - builder.used
    assert not unused, f"constraints for fields the proto does not have: {sorted(unused)}"
    error_responses = {
        f"Error{code}": {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
        }
        for code, text in sorted(
            {
                **ERROR_CODES,
                **BODY_TOO_LARGE,
                **QUOTA_EXCEEDED,
                **IDEMPOTENCY_ERRORS,
                **CONFLICT,
            }.items()
        )
    }
    schemas = dict(sorted(builder.schemas.items()))
    schemas["Status"] = STATUS_SCHEMA
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "callback-scheduler REST API",
            "version": "1.0.0",
            "description": "Generated from proto/scheduler/v1/scheduler.proto by "
            "`python -m deploy.openapi.generate`; do not edit by hand. The published contract "
            "is ../shared/spec/task_scheduler_api.md with DECISIONS.md; README.md lists the "
            "decisions this project adds. Paths are accepted with and without the trailing "
            "slash.",
        },
        "servers": [{"url": "http://127.0.0.1:8080", "description": "make run"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "RS256, iss=callback-scheduler, aud=callback-scheduler-api, "
                    "sub=<client_id>.",
                }
            },
            "responses": error_responses,
            "schemas": schemas,
        },
    }


STATUS_SCHEMA: Schema = {
    "type": "object",
    "description": "Every error, from Envoy or the api service: google.rpc.Status as JSON.",
    "required": ["code", "message", "details"],
    "properties": {
        "code": {"type": "integer", "minimum": 1, "maximum": 16, "description": "gRPC code"},
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "description": "google.rpc.ErrorInfo (`reason`: INVALID_INPUT, UNAUTHENTICATED, "
            "PERMISSION_DENIED, NOT_FOUND, REQUEST_TOO_LARGE, UNAVAILABLE, "
            "IDEMPOTENCY_KEY_REUSED, ...) and, for bad "
            "input, google.rpc.BadRequest with `field_violations`.",
            "items": {
                "type": "object",
                "required": ["@type"],
                "properties": {
                    "@type": {"type": "string"},
                    "reason": {"type": "string"},
                    "domain": {"type": "string"},
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                    "field_violations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["field", "description"],
                            "properties": {
                                "field": {"type": "string"},
                                "description": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # spell every value out: no &id001 anchors in a document people read


def load_descriptor_set(path: Path = DESCRIPTOR) -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())


def rendered(path: Path = DESCRIPTOR) -> str:
    """The text of scheduler.yaml as it must be committed."""
    header = "# Generated by `python -m deploy.openapi.generate` from the proto: do not edit.\n"
    body = yaml.dump(render(load_descriptor_set(path)), Dumper=_Dumper, sort_keys=False, width=100)
    return header + body


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the OpenAPI document of the REST API.")
    parser.add_argument("--descriptor-file", type=Path, default=DESCRIPTOR)
    args = parser.parse_args()
    DOCUMENT.write_text(rendered(args.descriptor_file))
    print(f"wrote {DOCUMENT}")


if __name__ == "__main__":
    main()
