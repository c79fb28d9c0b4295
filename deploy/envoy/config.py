"""Envoy configuration for the REST gateway, rendered as JSON (Envoy reads JSON or YAML).

Built in Python rather than templated YAML so the local stack, the tests and the Kubernetes
config map all render the same structure from the same ports and paths.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.envoy import body_fields
from services.common.auth import ISSUER

LUA_SCRIPT = Path(__file__).with_name("bare_arrays.lua")
UNKNOWN_FIELDS_SCRIPT = Path(__file__).with_name("unknown_fields.lua")
# The Lua filter that refuses unknown JSON fields (a name of its own: two Lua filters).
UNKNOWN_FIELDS_FILTER = "callback_scheduler.unknown_fields"
# The web console's static files (deploy/console), served by Envoy itself at CONSOLE_PREFIX.
CONSOLE_DIR = Path(__file__).resolve().parents[1] / "console"
CONSOLE_PREFIX = "/console/"
CONSOLE_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page and its scripts come from this origin only; scripts talk to this origin only (the
# REST API, with the bearer token); no inline script, no framing, no plugins.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Envoy refuses a direct response body above this (its default is 4 KiB).
MAX_CONSOLE_FILE_BYTES = 256 * 1024
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# Room for the largest page the api returns (1000 tasks with long URLs), which the Lua
# filter buffers whole. It is also how much a connection may buffer: the overload manager's
# heap limit and the connection limit bound what all connections together can hold.
BUFFER_LIMIT_BYTES = 32 * 1024 * 1024
ERROR_DOMAIN = "callback-scheduler"

# Connection and stream limits (Envoy's edge best practices, adapted: the limits are on
# requests and headers, the timeouts longer than the api's slowest answer, a 60 s route).
MAX_CONCURRENT_STREAMS = 100  # per HTTP/2 connection
MAX_REQUESTS_PER_CONNECTION = 10_000  # then the connection is closed (clients reconnect)
MAX_HEADERS_COUNT = 100
MAX_REQUEST_HEADERS_KB = 60
REQUEST_HEADERS_TIMEOUT = "10s"  # all request headers, from the first byte
REQUEST_TIMEOUT = "60s"  # the whole request, body included
STREAM_IDLE_TIMEOUT = "60s"  # no bytes either way on a stream
CONNECTION_IDLE_TIMEOUT = "300s"  # no stream on a connection

# Where jwt_authn puts the verified token's payload (dynamic metadata): the rate limit keys
# its buckets by the payload's `sub`. A header would do too, but a client could send its own.
JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD_KEY = "jwt_payload"
# Clients with a bucket of their own at once; past it the least recently seen client's bucket
# is dropped (and starts full when it comes back).
MAX_TRACKED_CLIENTS = 100_000

# Envoy's own replies (no token, unknown path, body too large, api down) get the same JSON
# shape as errors from the api service: google.rpc.Status with an ErrorInfo reason.
_LOCAL_REPLIES = [
    # (HTTP status, gRPC code, reason)
    (400, 3, "INVALID_INPUT"),
    (401, 16, "UNAUTHENTICATED"),
    (403, 7, "PERMISSION_DENIED"),
    (404, 5, "NOT_FOUND"),
    (405, 12, "METHOD_NOT_ALLOWED"),
    (408, 4, "REQUEST_TIMEOUT"),
    (413, 3, "REQUEST_TOO_LARGE"),
    (429, 8, "RATE_LIMITED"),
    (431, 3, "REQUEST_HEADERS_TOO_LARGE"),
    (503, 14, "UNAVAILABLE"),
    (504, 4, "TIMEOUT"),
]


@dataclass(frozen=True)
class EnvoySettings:
    rest_address: str
    rest_port: int
    admin_port: int
    api_host: str
    api_port: int
    descriptor_file: Path
    jwks_file: Path
    # STATIC for an IP address, STRICT_DNS for a Kubernetes Service name.
    api_discovery: str = "STATIC"
    # Local runs: this many api processes, on consecutive ports from api_port (Envoy
    # balances over them). On Kubernetes the Service does that: 1.
    api_processes: int = 1
    # Serve the web console (static files, inlined into the config) at /console/.
    console: bool = True
    # Per client (the token's `sub`), per Envoy process: a token bucket of `client_burst`
    # requests refilled at `client_requests_per_second`; over it, 429 RATE_LIMITED.
    client_requests_per_second: int = 1000
    client_burst: int = 2000
    # Overload manager: past 95 % of this heap Envoy frees memory, past 98 % it answers new
    # requests 503; and at most this many downstream connections at once.
    max_heap_bytes: int = 1024 * 1024 * 1024
    max_connections: int = 10_000


def _status_body(code: int, reason: str) -> dict[str, Any]:
    return {
        "json_format": {
            "code": code,
            "message": "%LOCAL_REPLY_BODY%",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": ERROR_DOMAIN,
                }
            ],
        },
        "content_type": "application/json",
    }


def rate_limit_message(settings: EnvoySettings) -> str:
    """The message of a 429 from the per-client rate limit."""
    return (
        f"too many requests: at most {settings.client_requests_per_second} per second per "
        f"client (bursts of {settings.client_burst}); retry later"
    )


def _local_reply_config(settings: EnvoySettings) -> dict[str, Any]:
    mappers = []
    for http, code, reason in _LOCAL_REPLIES:
        body = _status_body(code, reason)
        if http == 429:
            # The only 429 Envoy itself sends (the api's quota 429s are not local replies).
            body["json_format"]["message"] = rate_limit_message(settings)
        mappers.append(
            {
                "filter": {
                    "status_code_filter": {
                        "comparison": {
                            "op": "EQ",
                            "value": {"default_value": http, "runtime_key": f"reply_{http}"},
                        }
                    }
                },
                "body_format_override": body,
            }
        )
    if settings.console:
        mappers = console_reply_mappers() + mappers
    return {
        "mappers": [_unknown_field_mapper(), *mappers],
        "body_format": _status_body(2, "UNKNOWN"),
    }


def _unknown_field_mapper() -> dict[str, Any]:
    """The 400 of an unknown JSON field (unknown_fields.lua): the api's error shape, with
    the field in BadRequest.field_violations as the api names fields."""
    body = _status_body(3, "INVALID_INPUT")
    body["json_format"]["details"].append(
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "field_violations": [
                {
                    "field": f"%DYNAMIC_METADATA({body_fields.METADATA_NAMESPACE}:field)%",
                    "description": body_fields.DESCRIPTION,
                }
            ],
        }
    )
    return {
        "filter": {
            "metadata_filter": {
                "matcher": {
                    "filter": body_fields.METADATA_NAMESPACE,
                    "path": [{"key": "field"}],
                    "value": {"present_match": True},
                },
                # Envoy's default matches a request without the key: every other 400.
                "match_if_key_not_found": False,
            }
        },
        "body_format_override": body,
    }


def _path_filter(regex: str) -> dict[str, Any]:
    return {
        "header_filter": {
            "header": {"name": ":path", "string_match": {"safe_regex": {"regex": regex}}}
        }
    }


def console_reply_mappers() -> list[dict[str, Any]]:
    """Envoy sends a direct response as a local reply, which local_reply_config would turn
    into the JSON error shape: the console's paths keep their body, with their content type."""
    query = r"(\?.*)?$"
    by_type = [
        (rf"^{CONSOLE_PREFIX}(index\.html)?{query}", CONSOLE_TYPES[".html"]),
        *(
            (rf"^{CONSOLE_PREFIX}[^?]*\{suffix}{query}", content_type)
            for suffix, content_type in CONSOLE_TYPES.items()
        ),
        # The redirect of /console and the 404 of unknown files.
        (rf"^{CONSOLE_PREFIX.rstrip('/')}([/?].*)?$", "text/plain; charset=utf-8"),
    ]
    return [
        {
            "filter": _path_filter(regex),
            "body_format_override": {
                "text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"},
                "content_type": content_type,
            },
        }
        for regex, content_type in by_type
    ]


def _per_client_rate_limit(settings: EnvoySettings) -> dict[str, Any]:
    """local_ratelimit with one token bucket per client, keyed by the verified token's `sub`
    (a descriptor entry without a value: a bucket per distinct value, up to
    max_dynamic_descriptors, the least recently used dropped first)."""
    everyone = 100  # percent of requests the filter applies to and enforces
    return {
        "@type": "type.googleapis.com/"
        "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "per_client",
        "filter_enabled": {"default_value": {"numerator": everyone, "denominator": "HUNDRED"}},
        "filter_enforced": {"default_value": {"numerator": everyone, "denominator": "HUNDRED"}},
        # The filter's own bucket is unused (a request with a client takes its client's only);
        # it must exist and outlast any rate, so it is huge.
        "token_bucket": {
            "max_tokens": 1_000_000_000,
            "tokens_per_fill": 1_000_000_000,
            "fill_interval": "1s",
        },
        "always_consume_default_token_bucket": False,
        "max_dynamic_descriptors": MAX_TRACKED_CLIENTS,
        "rate_limits": [
            {
                "actions": [
                    {
                        "metadata": {
                            "descriptor_key": "client",
                            "metadata_key": {
                                "key": JWT_FILTER,
                                "path": [{"key": JWT_PAYLOAD_KEY}, {"key": "sub"}],
                            },
                        }
                    }
                ]
            }
        ],
        "descriptors": [
            {
                "entries": [{"key": "client"}],
                "token_bucket": {
                    "max_tokens": settings.client_burst,
                    "tokens_per_fill": settings.client_requests_per_second,
                    "fill_interval": "1s",
                },
            }
        ],
        "response_headers_to_add": [
            {
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                "header": {"key": "retry-after", "value": "1"},
            }
        ],
    }


def console_files() -> dict[str, Path]:
    """The console's files by their URL path."""
    return {
        CONSOLE_PREFIX + str(path.relative_to(CONSOLE_DIR)): path
        for path in sorted(CONSOLE_DIR.rglob("*"))
        if path.is_file() and path.suffix in CONSOLE_TYPES
    }


def _static_response(status: int, body: str, content_type: str) -> dict[str, Any]:
    headers = {
        "content-type": content_type,
        "content-security-policy": CONSOLE_CSP,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
        # Always revalidated: a new console takes effect on the next load.
        "cache-control": "no-cache",
    }
    return {
        "direct_response": {"status": status, "body": {"inline_string": body}},
        "response_headers_to_add": [
            {"append_action": "OVERWRITE_IF_EXISTS_OR_ADD", "header": {"key": k, "value": v}}
            for k, v in headers.items()
        ],
        # Only these routes skip the token check, and every one of them is a direct response
        # from Envoy: nothing under /console reaches the api, so the console's pages cannot
        # be a way around authentication. Its scripts call the REST API like any client,
        # with the bearer token, on the routes below.
        "typed_per_filter_config": {
            name: {
                "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "disabled": True,
            }
            for name in _CONSOLE_SKIPS
        },
    }


# Filters that have nothing to do for a static file (the transcoder would answer 404 for a
# path that is no gRPC method).
_CONSOLE_SKIPS = (
    "envoy.filters.http.jwt_authn",
    "envoy.filters.http.local_ratelimit",
    "envoy.filters.http.buffer",
    "envoy.filters.http.lua",
    UNKNOWN_FIELDS_FILTER,
    "envoy.filters.http.grpc_json_transcoder",
)


def console_routes() -> list[dict[str, Any]]:
    """Routes serving the web console: one exact path per file, /console/ is its index.html,
    /console redirects there, anything else under /console is a 404 from Envoy."""
    routes = []
    files = console_files()
    for url, path in files.items():
        body = path.read_text()
        if len(body.encode()) > MAX_CONSOLE_FILE_BYTES:
            raise ValueError(f"{path} is over {MAX_CONSOLE_FILE_BYTES} bytes")
        route = _static_response(200, body, CONSOLE_TYPES[path.suffix])
        routes.append({"match": {"path": url}, **route})
        if url == CONSOLE_PREFIX + "index.html":
            routes.append({"match": {"path": CONSOLE_PREFIX}, **route})
    routes.append(
        {
            "match": {"path": CONSOLE_PREFIX.rstrip("/")},
            "redirect": {"path_redirect": CONSOLE_PREFIX},
            "typed_per_filter_config": _static_response(200, "", "")["typed_per_filter_config"],
        }
    )
    routes.append(
        {
            "match": {"prefix": CONSOLE_PREFIX},
            **_static_response(404, "not found\n", "text/plain; charset=utf-8"),
        }
    )
    return routes


def _http_filters(settings: EnvoySettings) -> list[dict[str, Any]]:
    # Order matters: authenticate first, so that a request without a valid token is refused
    # on its headers, before anything reads or buffers its body; then the per-client rate
    # limit (also before the body); only then buffer the body.
    return [
        {
            "name": JWT_FILTER,
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {
                    "local": {
                        "issuer": ISSUER,
                        # No `audiences` here: Envoy answers a wrong audience with 403, the
                        # contract wants 401 for any invalid token; the api checks it (401).
                        "local_jwks": {"filename": str(settings.jwks_file)},
                        # The api service verifies the token again: keep it on the request.
                        "forward": True,
                        # For the rate limit's key.
                        "payload_in_metadata": JWT_PAYLOAD_KEY,
                        # The token's lifetime and revocation are checked by the api, which
                        # says why it refuses (Envoy's max_lifetime answers "Jwt verification
                        # fails", the same as a bad signature).
                    }
                },
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "local"}}],
            },
        },
        {
            "name": "envoy.filters.http.local_ratelimit",
            "typed_config": _per_client_rate_limit(settings),
        },
        {
            "name": "envoy.filters.http.buffer",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": MAX_REQUEST_BYTES,
            },
        },
        {
            "name": "envoy.filters.http.lua",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": LUA_SCRIPT.read_text()},
            },
        },
        {
            "name": UNKNOWN_FIELDS_FILTER,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {
                    "inline_string": body_fields.lua_tables() + UNKNOWN_FIELDS_SCRIPT.read_text()
                },
            },
        },
        {
            "name": "envoy.filters.http.grpc_json_transcoder",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
                "proto_descriptor": str(settings.descriptor_file),
                "services": ["scheduler.v1.TaskScheduler"],
                "print_options": {
                    "preserve_proto_field_names": True,
                    "always_print_primitive_fields": True,
                },
                "convert_grpc_status": True,
                "request_validation_options": {
                    "reject_unknown_method": True,
                    "reject_unknown_query_parameters": True,
                    "reject_binding_body_field_collisions": True,
                },
            },
        },
        {
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
            },
        },
    ]


def _overload_manager(settings: EnvoySettings) -> dict[str, Any]:
    """Envoy's overload manager as its edge best practices set it: a fixed heap budget (free
    memory at 95 %, refuse new requests at 98 %) and a cap on downstream connections."""
    heap = "envoy.resource_monitors.fixed_heap"
    return {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {
                "name": heap,
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    "max_heap_size_bytes": settings.max_heap_bytes,
                },
            },
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                    "downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": settings.max_connections,
                },
            },
        ],
        "actions": [
            {
                "name": "envoy.overload_actions.shrink_heap",
                "triggers": [{"name": heap, "threshold": {"value": 0.95}}],
            },
            {
                "name": "envoy.overload_actions.stop_accepting_requests",
                "triggers": [{"name": heap, "threshold": {"value": 0.98}}],
            },
        ],
    }


def render(settings: EnvoySettings) -> dict[str, Any]:
    """The whole Envoy bootstrap for the REST gateway."""
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "rest",
        "codec_type": "AUTO",
        "merge_slashes": True,
        "request_headers_timeout": REQUEST_HEADERS_TIMEOUT,
        "request_timeout": REQUEST_TIMEOUT,
        "stream_idle_timeout": STREAM_IDLE_TIMEOUT,
        "common_http_protocol_options": {
            "idle_timeout": CONNECTION_IDLE_TIMEOUT,
            "max_headers_count": MAX_HEADERS_COUNT,
            "max_requests_per_connection": MAX_REQUESTS_PER_CONNECTION,
        },
        "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
        "http2_protocol_options": {
            "max_concurrent_streams": MAX_CONCURRENT_STREAMS,
            "initial_stream_window_size": 65536,  # 64 KiB
            "initial_connection_window_size": 1048576,  # 1 MiB
        },
        "route_config": {
            "name": "rest",
            "max_direct_response_body_size_bytes": MAX_CONSOLE_FILE_BYTES,
            "virtual_hosts": [
                {
                    "name": "api",
                    "domains": ["*"],
                    "routes": [
                        *(console_routes() if settings.console else []),
                        {
                            "match": {"prefix": "/"},
                            "route": {"cluster": "api_grpc", "timeout": "60s"},
                        },
                    ],
                }
            ],
        },
        "local_reply_config": _local_reply_config(settings),
        "http_filters": _http_filters(settings),
    }
    api_cluster = {
        "name": "api_grpc",
        "type": settings.api_discovery,
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
        "connect_timeout": "2s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": "api_grpc",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": settings.api_host,
                                        "port_value": settings.api_port + index,
                                    }
                                }
                            }
                        }
                        for index in range(settings.api_processes)
                    ]
                }
            ],
        },
    }
    return {
        "overload_manager": _overload_manager(settings),
        "admin": {
            "address": {
                "socket_address": {"address": "127.0.0.1", "port_value": settings.admin_port}
            }
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "rest",
                    "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
                    "address": {
                        "socket_address": {
                            "address": settings.rest_address,
                            "port_value": settings.rest_port,
                        }
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [api_cluster],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Print the Envoy bootstrap as JSON.")
    parser.add_argument("--rest-address", default="0.0.0.0")
    parser.add_argument("--rest-port", type=int, default=8080)
    parser.add_argument("--admin-port", type=int, default=9901)
    parser.add_argument("--api-host", default="127.0.0.1")
    parser.add_argument("--api-port", type=int, default=50051)
    parser.add_argument("--api-discovery", default="STATIC", choices=["STATIC", "STRICT_DNS"])
    parser.add_argument("--descriptor-file", type=Path, required=True)
    parser.add_argument("--jwks-file", type=Path, required=True)
    parser.add_argument("--client-requests-per-second", type=int, default=1000)
    parser.add_argument("--client-burst", type=int, default=2000)
    args = parser.parse_args()
    settings = EnvoySettings(
        rest_address=args.rest_address,
        rest_port=args.rest_port,
        admin_port=args.admin_port,
        api_host=args.api_host,
        api_port=args.api_port,
        descriptor_file=args.descriptor_file,
        jwks_file=args.jwks_file,
        api_discovery=args.api_discovery,
        client_requests_per_second=args.client_requests_per_second,
        client_burst=args.client_burst,
    )
    print(json.dumps(render(settings), indent=2))


if __name__ == "__main__":
    main()
