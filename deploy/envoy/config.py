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

from services.common.auth import ISSUER

LUA_SCRIPT = Path(__file__).with_name("bare_arrays.lua")
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# Room for the largest page the api returns (1000 tasks with long URLs), which the Lua
# filter buffers whole.
BUFFER_LIMIT_BYTES = 32 * 1024 * 1024
ERROR_DOMAIN = "callback-scheduler"

# Envoy's own replies (no token, unknown path, body too large, api down) get the same JSON
# shape as errors from the api service: google.rpc.Status with an ErrorInfo reason.
_LOCAL_REPLIES = [
    # (HTTP status, gRPC code, reason)
    (400, 3, "INVALID_INPUT"),
    (401, 16, "UNAUTHENTICATED"),
    (403, 7, "PERMISSION_DENIED"),
    (404, 5, "NOT_FOUND"),
    (405, 12, "METHOD_NOT_ALLOWED"),
    (413, 3, "REQUEST_TOO_LARGE"),
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


def _local_reply_config() -> dict[str, Any]:
    mappers = [
        {
            "filter": {
                "status_code_filter": {
                    "comparison": {
                        "op": "EQ",
                        "value": {"default_value": http, "runtime_key": f"reply_{http}"},
                    }
                }
            },
            "body_format_override": _status_body(code, reason),
        }
        for http, code, reason in _LOCAL_REPLIES
    ]
    return {"mappers": mappers, "body_format": _status_body(2, "UNKNOWN")}


def _http_filters(settings: EnvoySettings) -> list[dict[str, Any]]:
    return [
        {
            "name": "envoy.filters.http.buffer",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": MAX_REQUEST_BYTES,
            },
        },
        {
            "name": "envoy.filters.http.jwt_authn",
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
                    }
                },
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "local"}}],
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


def render(settings: EnvoySettings) -> dict[str, Any]:
    """The whole Envoy bootstrap for the REST gateway."""
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "rest",
        "codec_type": "AUTO",
        "merge_slashes": True,
        "route_config": {
            "name": "rest",
            "virtual_hosts": [
                {
                    "name": "api",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "route": {"cluster": "api_grpc", "timeout": "60s"},
                        }
                    ],
                }
            ],
        },
        "local_reply_config": _local_reply_config(),
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
    )
    print(json.dumps(render(settings), indent=2))


if __name__ == "__main__":
    main()
