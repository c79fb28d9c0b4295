"""Envoy in deploy/k8s: its config is the shared renderer's, it comes with the descriptor set
from a ConfigMap, and a real Envoy accepts it (`envoy --mode validate`)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.k8s import envoy_config
from deploy.local.keys import ensure_keys
from deploy.local.stack import BIN, DESCRIPTOR
from tests.support.manifests import OVERLAYS, Resource, of_kind, pod_template


def test_envoy_config_is_the_shared_renderers() -> None:
    """One source: deploy/envoy/config.py renders the local stack's Envoy config and this."""
    assert envoy_config.CONFIG_FILE.read_text() == envoy_config.rendered(), (
        "deploy/k8s/base/envoy/envoy.json is stale: run `make k8s-envoy-config`"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_gets_its_config_and_descriptor_from_a_configmap(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    resources = rendered[overlay]
    pod = pod_template(of_kind(resources, "Deployment")["envoy"])["spec"]
    (container,) = pod["containers"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert Path(mount["mountPath"]) == envoy_config.CONFIG_MOUNT
    config_path = container["command"][container["command"].index("--config-path") + 1]
    assert Path(config_path) == envoy_config.CONFIG_MOUNT / "envoy.json"
    configmap = of_kind(resources, "ConfigMap")[volume["configMap"]["name"]]
    assert configmap["data"]["envoy.json"] == envoy_config.CONFIG_FILE.read_text()
    assert base64.b64decode(configmap["binaryData"]["scheduler.pb"]) == DESCRIPTOR.read_bytes()
    assert envoy_config.SETTINGS.descriptor_file == envoy_config.CONFIG_MOUNT / "scheduler.pb"
    # Envoy balances over every api pod: its upstream is the headless Service of the api.
    upstream = of_kind(resources, "Service")[envoy_config.SETTINGS.api_host]["spec"]
    assert upstream["clusterIP"] == "None"
    assert upstream["selector"] == {"app.kubernetes.io/name": "api"}
    assert [p["port"] for p in upstream["ports"]] == [envoy_config.SETTINGS.api_port]


def test_envoy_accepts_the_manifests_config(tmp_path: Path) -> None:
    """`envoy --mode validate` on the committed config, its two file paths pointed at the
    generated descriptor set and a generated JWKS (validation opens both)."""
    shutil.copyfile(DESCRIPTOR, tmp_path / "scheduler.pb")
    jwks = ensure_keys(tmp_path / "keys")
    text = envoy_config.CONFIG_FILE.read_text()
    for path, local in (
        (envoy_config.SETTINGS.descriptor_file, tmp_path / "scheduler.pb"),
        (envoy_config.SETTINGS.jwks_file, jwks),
    ):
        assert f'"{path}"' in text
        text = text.replace(f'"{path}"', f'"{local}"')
    config = tmp_path / "envoy.json"
    config.write_text(text)
    run = subprocess.run(
        [str(BIN / "envoy"), "--mode", "validate", "--config-path", str(config)]
        + ["--disable-hot-restart", "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and "OK" in run.stdout, run.stdout + run.stderr
