"""deploy/openapi/scheduler.yaml is what the proto renders, and says what the proto says.

The first test alone keeps the document from drifting (it is generated); the others check
the generated document independently of the generator, against the proto's http rules and
messages, so that a generator bug cannot hide a difference either.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from google.protobuf import descriptor_pb2
from openapi_spec_validator import validate
from scheduler.v1 import scheduler_pb2 as pb

from deploy.openapi import generate

FieldType = descriptor_pb2.FieldDescriptorProto


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(generate.DOCUMENT.read_text())
    return loaded


def test_committed_document_is_what_the_proto_renders() -> None:
    assert generate.DOCUMENT.read_text() == generate.rendered(), (
        "deploy/openapi/scheduler.yaml is stale: run `make openapi` and commit it"
    )


def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)


def _strip(path: str) -> str:
    return path.rstrip("/")


def test_every_http_rule_and_nothing_else(document: dict[str, Any]) -> None:
    rules = {
        (verb, template): name
        for name, verb, template in generate.http_rules(generate.load_descriptor_set())
    }
    documented = {
        (verb, _strip(path)): operation["operationId"]
        for path, item in document["paths"].items()
        for verb, operation in item.items()
    }
    assert documented == rules
    assert set(rules.values()) == set(
        pb.DESCRIPTOR.services_by_name["TaskScheduler"].methods_by_name
    )


def _operations(document: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {
        operation["operationId"]: (verb, path, operation)
        for path, item in document["paths"].items()
        for verb, operation in item.items()
    }


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema or "allOf" in schema:
        if "allOf" in schema:
            schema = schema["allOf"][0]
        else:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = document["components"]["schemas"][name]
    return schema


JSON_TYPES = {
    FieldType.TYPE_STRING: "string",
    FieldType.TYPE_INT32: "integer",
    FieldType.TYPE_UINT32: "integer",
    FieldType.TYPE_DOUBLE: "number",
    FieldType.TYPE_BOOL: "boolean",
    FieldType.TYPE_MESSAGE: "object",
}


def _check_fields(document: dict[str, Any], schema: dict[str, Any], message: Any) -> None:
    """The object schema has exactly the message's fields, with their JSON types."""
    schema = _resolve(document, schema)
    assert set(schema["properties"]) == {f.name for f in message.fields}, message.full_name
    for field in message.fields:
        prop = _resolve(document, schema["properties"][field.name])
        if field.is_repeated:
            assert prop["type"] == "array", (message.full_name, field.name)
            prop = _resolve(document, prop["items"])
        if field.message_type is not None and field.message_type.full_name.startswith("google."):
            continue  # google.protobuf.Value: any JSON value
        assert prop["type"] == JSON_TYPES[field.type], (message.full_name, field.name)
        if field.message_type is not None:
            _check_fields(document, prop, field.message_type)


def test_parameters_bodies_and_responses_match_the_messages(document: dict[str, Any]) -> None:
    operations = _operations(document)
    service = pb.DESCRIPTOR.services_by_name["TaskScheduler"]
    for method in service.methods:
        _verb, path, operation = operations[method.name]
        path_params = {p.strip("{}") for p in path.split("/") if p.startswith("{")}
        params = {(p["in"], p["name"]) for p in operation["parameters"] if p["in"] != "header"}
        request_fields = {f.name for f in method.input_type.fields}
        body = operation.get("requestBody")
        if body is None:
            # GET and DELETE: every field not in the path is a query parameter.
            expected = {("path", n) for n in path_params} | {
                ("query", n) for n in request_fields - path_params
            }
            assert params == expected, method.name
        else:
            assert params == {("path", n) for n in path_params}, method.name
            schema = body["content"]["application/json"]["schema"]
            assert set(schema["properties"]) == request_fields - path_params, method.name
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        output = method.output_type
        if output.full_name == "google.protobuf.Empty":
            assert ok["properties"] == {}
        elif [f.name for f in output.fields] == ["items"]:
            # Lists are bare arrays (deploy/envoy/bare_arrays.lua).
            assert ok["type"] == "array", method.name
            _check_fields(document, ok["items"], output.fields[0].message_type)
        else:
            _check_fields(document, ok, output)
        for code in ("400", "401", "403", "404"):
            assert code in operation["responses"], (method.name, code)


def test_every_post_takes_an_idempotency_key(document: dict[str, Any]) -> None:
    for verb, _path, operation in _operations(document).values():
        headers = [p for p in operation["parameters"] if p["in"] == "header"]
        if verb == "post":
            assert [h["name"] for h in headers] == ["Idempotency-Key"], operation["operationId"]
            assert headers[0]["schema"]["maxLength"] == 255
            assert "Idempotent-Replayed" in operation["responses"]["200"]["headers"]
            assert "422" in operation["responses"]
        else:
            assert headers == [], operation["operationId"]


def test_errors_are_google_rpc_status(document: dict[str, Any]) -> None:
    status = document["components"]["schemas"]["Status"]
    assert set(status["required"]) == {"code", "message", "details"}
    assert document["security"] == [{"bearerAuth": []}]
