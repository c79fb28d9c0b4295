"""The Envoy bootstrap of the Kubernetes manifests, from the renderer `make run` uses.

`python -m deploy.k8s.envoy_config` (`make k8s-envoy-config`) writes base/envoy/envoy.json
and copies the descriptor set there; the envoy-config ConfigMap is generated from both.
A unit test fails when the committed envoy.json differs from what this renders.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from deploy.envoy.config import EnvoySettings, render

HERE = Path(__file__).parent
ENVOY_DIR = HERE / "base" / "envoy"
CONFIG_FILE = ENVOY_DIR / "envoy.json"
DESCRIPTOR_COPY = ENVOY_DIR / "scheduler.pb"

# Where the Envoy Deployment (base/envoy.yaml) mounts the envoy-config ConfigMap and the JWKS.
CONFIG_MOUNT = Path("/etc/envoy/config")
JWKS_MOUNT = Path("/etc/envoy/jwks")

SETTINGS = EnvoySettings(
    rest_address="0.0.0.0",
    rest_port=8080,
    admin_port=9901,
    # The headless Service: Envoy sees every ready api pod and balances per request.
    api_host="api-headless",
    api_port=50051,
    api_discovery="STRICT_DNS",
    descriptor_file=CONFIG_MOUNT / "scheduler.pb",
    jwks_file=JWKS_MOUNT / "jwks.json",
    # Per Envoy replica: with N replicas a client may get up to N times this.
    client_requests_per_second=1000,
    client_burst=2000,
    # Below the Envoy container's memory limit (512Mi in base/envoy.yaml), so that Envoy
    # sheds load before the kernel kills it.
    max_heap_bytes=400 * 1024 * 1024,
    max_connections=10_000,
)


def rendered() -> str:
    """The text of envoy.json as it must be committed."""
    return json.dumps(render(SETTINGS), indent=2) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Render the Envoy config of the manifests.")
    parser.add_argument(
        "--descriptor-file",
        type=Path,
        required=True,
        help="the descriptor set built by `make gen` (gen/scheduler.pb)",
    )
    args = parser.parse_args()
    CONFIG_FILE.write_text(rendered())
    shutil.copyfile(args.descriptor_file, DESCRIPTOR_COPY)
    print(f"wrote {CONFIG_FILE} and {DESCRIPTOR_COPY}")


if __name__ == "__main__":
    main()
