"""NATS in deploy/k8s: the rendered config is accepted by a real nats-server, has the
generated users and TLS, prod streams are replicated over the cluster, and each service logs
in as its own user over TLS."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from deploy import nats_users
from deploy.local.stack import BIN
from tests.support.certs import make_server_certificate
from tests.support.manifests import (
    OVERLAYS,
    Resource,
    configmap_env,
    nats_config,
    nats_config_files,
    of_kind,
    pod_template,
    service_container,
    stream_replicas,
)

NATS_TLS_DIR = "/etc/nats-tls/"


def test_prod_streams_are_replicated_over_the_nats_cluster(
    rendered: dict[str, list[Resource]],
) -> None:
    prod = rendered["prod"]
    statefulset = of_kind(prod, "StatefulSet")["nats"]
    servers = statefulset["spec"]["replicas"]
    assert stream_replicas(prod) == servers == 3
    headless = of_kind(prod, "Service")[statefulset["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    routes = set(re.findall(r"nats://([\w.-]+):6222", nats_config(prod)))
    assert routes == {f"nats-{i}.{headless['metadata']['name']}" for i in range(servers)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_server_accepts_its_config(
    rendered: dict[str, list[Resource]], overlay: str, tmp_path: Path
) -> None:
    """With its users (auth.conf), their passwords from the environment, and TLS with a
    certificate as the Secret nats-tls holds (here one made for the test)."""
    certificate = make_server_certificate(tmp_path / "tls", ["nats"])
    for name, text in nats_config_files(rendered[overlay]).items():
        (tmp_path / name).write_text(text.replace(NATS_TLS_DIR, f"{certificate.ca_file.parent}/"))
    passwords = {u.password_variable: f"p{i}" for i, u in enumerate(nats_users.USERS)}
    run = subprocess.run(
        [str(BIN / "nats-server"), "-c", str(tmp_path / "nats.conf"), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SERVER_NAME": "nats-0", **passwords},
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_nats_users_are_the_generators() -> None:
    """deploy/k8s/base/nats/auth.conf is what deploy/nats_users.py renders (run
    `python -m deploy.nats_users` after changing its table), without the local admin."""
    assert nats_users.K8S_AUTH_CONFIG.read_text() == nats_users.auth_config(local=False)
    assert "admin" not in {u.name for u in nats_users.users_for(local=False)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_has_users_and_tls(rendered: dict[str, list[Resource]], overlay: str) -> None:
    resources = rendered[overlay]
    files = nats_config_files(resources)
    assert files["auth.conf"] == nats_users.auth_config(local=False)
    config = files["nats.conf"]
    assert re.search(r"^include auth.conf$", config, re.M)
    for block in ("tls", *(("cluster",) if overlay == "prod" else ())):
        assert re.search(rf"^{block} \{{", config, re.M), block
    # Clients over TLS only: the server requires it, and nothing else listens for clients.
    assert config.count(f"cert_file: {NATS_TLS_DIR}tls.crt") == (2 if overlay == "prod" else 1)
    pod = pod_template(of_kind(resources, "StatefulSet")["nats"])["spec"]
    (container,) = pod["containers"]
    env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    for entry in nats_users.users_for(local=False):
        assert env[entry.password_variable] == {
            "name": f"nats-user-{entry.name}",
            "key": "password",
        }
    tls_volumes = {
        v["name"] for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "nats-tls"
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert [mounts[v] for v in tls_volumes] == [NATS_TLS_DIR.rstrip("/")]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_logs_in_to_nats_as_its_own_user_over_tls(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    """Its user from its ConfigMap, its password from its own Secret, the server's
    certificate checked against the CA of nats-tls, mounted without the key."""
    resources = rendered[overlay]
    for name in nats_users.SERVICE_USERS:
        container = service_container(resources, name)
        env = configmap_env(resources, container)
        assert env["NATS_USER"] == name
        assert env["NATS_URL"].startswith("tls://")
        secrets = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert secrets["NATS_PASSWORD"] == {"name": f"nats-user-{name}", "key": "password"}
        pod = pod_template(of_kind(resources, "Deployment")[name])["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        ca_file = Path(env["NATS_TLS_CA_FILE"])
        (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == ca_file.parent]
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == "nats-tls"
        assert secret["items"] == [{"key": "ca.crt", "path": ca_file.name}]
    api = service_container(resources, "api")
    assert not [k for k in configmap_env(resources, api) if k.startswith("NATS_")]
