"""The gateway's rendered config: what runs before the body is read, and the limits."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from deploy.envoy import body_fields
from deploy.envoy.config import (
    CONSOLE_CSP,
    CONSOLE_PREFIX,
    CONSOLE_TYPES,
    EnvoySettings,
    console_files,
    render,
)
from deploy.k8s import envoy_config

SETTINGS = EnvoySettings(
    rest_address="127.0.0.1",
    rest_port=8080,
    admin_port=9901,
    api_host="127.0.0.1",
    api_port=50051,
    descriptor_file=Path("scheduler.pb"),
    jwks_file=Path("jwks.json"),
    client_requests_per_second=7,
    client_burst=11,
)


def manager(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    typed: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def test_authentication_and_the_rate_limit_run_before_the_body_is_buffered() -> None:
    names = [f["name"] for f in manager(render(SETTINGS))["http_filters"]]
    assert names == [
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.buffer",
        "envoy.filters.http.lua",
        # Unknown JSON fields are refused before the transcoder would drop them.
        "callback_scheduler.unknown_fields",
        "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.router",
    ]


def test_every_body_rpc_has_its_unknown_field_route() -> None:
    routes, messages = body_fields.body_rules()
    assert {(method, message.split(".")[-1]) for method, _, message in routes} == {
        ("POST", "CreateQueueRequest"),
        ("PUT", "UpdateQueueRequest"),
        ("POST", "CreateTasksRequest"),
        ("PUT", "UpdateTaskRequest"),
        ("POST", "CreateIntervalRequest"),
        ("PUT", "UpdateIntervalRequest"),
    }
    # Nested messages are checked too; a JSON value field (try_again_pause) takes anything;
    # a PUT accepts the answered object's read-only fields; a POST does not.
    assert messages["scheduler.v1.TaskInput"]["callback_params"] == "scheduler.v1.CallbackParams"
    assert messages["scheduler.v1.TaskInput"]["try_again_pause"] is True
    assert messages["scheduler.v1.UpdateQueueRequest"]["create_date_utc"] is True
    assert "create_date_utc" not in messages["scheduler.v1.CreateQueueRequest"]


def test_the_rate_limit_is_per_client_with_the_settings_values() -> None:
    filters = {f["name"]: f["typed_config"] for f in manager(render(SETTINGS))["http_filters"]}
    limit = filters["envoy.filters.http.local_ratelimit"]
    (descriptor,) = limit["descriptors"]
    assert descriptor["entries"] == [{"key": "client"}]  # no value: a bucket per client
    assert descriptor["token_bucket"] == {
        "max_tokens": 11,
        "tokens_per_fill": 7,
        "fill_interval": "1s",
    }
    (action,) = limit["rate_limits"][0]["actions"]
    assert action["metadata"]["metadata_key"]["path"][-1] == {"key": "sub"}


def test_overload_manager_and_connection_limits_are_set() -> None:
    config = render(SETTINGS)
    monitors = {m["name"] for m in config["overload_manager"]["resource_monitors"]}
    assert monitors == {
        "envoy.resource_monitors.fixed_heap",
        "envoy.resource_monitors.global_downstream_max_connections",
    }
    hcm = manager(config)
    assert hcm["http2_protocol_options"]["max_concurrent_streams"] == 100
    assert hcm["common_http_protocol_options"]["max_requests_per_connection"] > 0
    assert hcm["common_http_protocol_options"]["max_headers_count"] > 0
    assert hcm["request_timeout"] and hcm["request_headers_timeout"]


def test_the_kubernetes_heap_limit_is_below_the_containers_memory_limit() -> None:
    documents = yaml.safe_load_all((envoy_config.HERE / "base" / "envoy.yaml").read_text())
    deployment = next(d for d in documents if d and d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    assert envoy_config.SETTINGS.max_heap_bytes < int(limit[:-2]) * 1024 * 1024


def routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    route_list: list[dict[str, Any]] = manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    return route_list


def test_the_console_routes_are_envoys_own_answers_and_the_only_ones_without_a_token() -> None:
    all_routes = routes(render(SETTINGS))
    console = [r for r in all_routes if r is not all_routes[-1]]
    # The REST API is the last route, as before: everything else goes to the api, token first.
    assert all_routes[-1] == {
        "match": {"prefix": "/"},
        "route": {"cluster": "api_grpc", "timeout": "60s"},
    }
    assert console, "the console is served"
    for route in console:
        match = route["match"].get("path") or route["match"]["prefix"]
        assert match.startswith(CONSOLE_PREFIX.rstrip("/")), match
        # Never forwarded: a direct response or a redirect, so skipping the token check
        # cannot open a way to the api.
        assert "route" not in route and ("direct_response" in route or "redirect" in route)
        skipped = route["typed_per_filter_config"]
        assert skipped["envoy.filters.http.jwt_authn"]["disabled"] is True
    # Anything else under /console is Envoy's 404, not the api's.
    assert console[-1]["match"] == {"prefix": CONSOLE_PREFIX}
    assert console[-1]["direct_response"]["status"] == 404


def test_every_console_file_is_served_with_its_type_and_a_strict_policy() -> None:
    by_path = {r["match"].get("path"): r for r in routes(render(SETTINGS))}
    files = console_files()
    assert {"/console/index.html", "/console/app.js", "/console/api.js"} <= set(files)
    for url, path in files.items():
        route = by_path[url]
        assert route["direct_response"]["body"]["inline_string"] == path.read_text()
        headers = {
            h["header"]["key"]: h["header"]["value"] for h in route["response_headers_to_add"]
        }
        assert headers["content-security-policy"] == CONSOLE_CSP
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-type"] == CONSOLE_TYPES[path.suffix]
    assert "'unsafe-inline'" not in CONSOLE_CSP and "'unsafe-eval'" not in CONSOLE_CSP
    assert (
        by_path[CONSOLE_PREFIX]["direct_response"]
        == by_path["/console/index.html"]["direct_response"]
    )


def test_without_the_console_the_routes_are_the_api_alone() -> None:
    config = render(replace(SETTINGS, console=False))
    assert routes(config) == [
        {"match": {"prefix": "/"}, "route": {"cluster": "api_grpc", "timeout": "60s"}}
    ]
