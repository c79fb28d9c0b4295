"""Fixtures of the deploy tier: deploy/k8s rendered once per session by the real kubectl
(pytest finds them here; nothing imports this; helpers live in tests/support/manifests.py).

The deploy tier checks what ships besides the code: the Kubernetes manifests, the NATS and
Envoy configs in them (accepted by the real nats-server and Envoy), the Dockerfile (hadolint).
It starts no stack and needs no database.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from deploy.local.stack import DESCRIPTOR
from tests.support.manifests import K8S, OVERLAYS, Resource


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Resource]]:
    """Each overlay as `kubectl kustomize` renders it, from a copy of deploy/k8s that holds
    the descriptor set `make gen` built (as `make k8s-envoy-config` puts it there)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is missing: `make system-deps` installs it (README: Kubernetes)")
    if not DESCRIPTOR.exists():
        pytest.fail(f"{DESCRIPTOR} is missing: run `make gen`")
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("__pycache__", "*.py", "*.pb"))
    shutil.copyfile(DESCRIPTOR, tree / "base" / "envoy" / "scheduler.pb")
    result: dict[str, list[Resource]] = {}
    for overlay in OVERLAYS:
        run = subprocess.run(
            [kubectl, "kustomize", str(tree / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, f"kubectl kustomize overlays/{overlay}: {run.stderr}"
        result[overlay] = [doc for doc in yaml.safe_load_all(run.stdout) if doc]
    return result
