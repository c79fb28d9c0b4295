"""deploy/k8s: every overlay renders, validates against the Kubernetes schemas, and keeps the
rules of the issue (hardened workloads, gRPC health probes, config and secrets, migrations
first, replicas, disruption budgets, spread, network policies); Envoy's config is the shared
renderer's and Envoy accepts it; the image definition lints.

The rules are checked on what `kubectl kustomize` renders, for every workload found there,
so a new manifest that leaves one out fails here.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from deploy import nats_users
from deploy.k8s import envoy_config
from deploy.local.keys import ensure_keys
from deploy.local.stack import BIN, DESCRIPTOR, ROOT
from services.api.settings import ApiSettings
from services.common import db_roles
from services.common.tenancy import TenantDefaults
from services.dialer.settings import DialerSettings
from services.dispatcher.settings import DispatcherSettings
from services.notifier.settings import NotifierSettings
from tests.certs import make_server_certificate

Resource = dict[str, Any]

K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
OVERLAYS = ("dev", "prod")
NAMESPACES = {"dev": "callback-scheduler-dev", "prod": "callback-scheduler"}
# The Kubernetes release whose schemas the rendered objects must satisfy.
KUBERNETES_VERSION = "1.32"
# Custom resources: no schema offline, checked below by hand.
CUSTOM_RESOURCES = {("postgresql.cnpg.io/v1", "Cluster")}

IMAGE = "callback-scheduler"
# Images that are not ours, pinned to a version.
THIRD_PARTY_IMAGES = {"nats": re.compile(r"^nats:\d+\.\d+\.\d+-alpine$")}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}

SERVICES: dict[str, type[BaseSettings]] = {
    "api": ApiSettings,
    "dispatcher": DispatcherSettings,
    "dialer": DialerSettings,
    "notifier": NotifierSettings,
}
PROD_MIN_REPLICAS = {"envoy": 2, "api": 2, "dispatcher": 3, "dialer": 2, "notifier": 2}
# The schema owner's URI (the migrate Job only), and each service's own role's.
DATABASE_SECRET = {"name": "postgres-app", "key": "uri"}


def role_secret(service: str) -> dict[str, str]:
    return {"name": f"postgres-role-{service}", "key": "uri"}


# Settings that must come from a Secret, by service.
SECRET_SETTINGS = {
    "api": {"DATABASE_URL"},
    "dispatcher": {"DATABASE_URL", "NATS_PASSWORD"},
    "dialer": {"DATABASE_URL", "DIALER_SIP_ACCOUNTS", "NATS_PASSWORD"},
    "notifier": {"DATABASE_URL", "NOTIFIER_SIGNING_KEY", "NATS_PASSWORD"},
}
SECRET_LOOKING = re.compile(r"KEY|PASSWORD|SECRET|TOKEN|DATABASE_URL|CREDENTIAL")

# Who may talk to whom: "<peer> <protocol>/<port>", peers named by their pods' name label.
SCRAPE = "monitoring/prometheus tcp/9464"
EXPECTED_INGRESS = {
    "envoy": {"anywhere tcp/8080"},
    "api": {"envoy tcp/50051", SCRAPE},
    "dispatcher": {SCRAPE},
    "dialer": {SCRAPE},
    "notifier": {SCRAPE},
    "migrate": set(),
    "nats": {"dispatcher tcp/4222", "dialer tcp/4222", "notifier tcp/4222", "nats tcp/6222"},
    "postgres": {
        *(f"{c} tcp/5432" for c in ("api", "dispatcher", "dialer", "notifier", "migrate")),
        "postgres tcp/5432",
        "postgres tcp/8000",
        "cnpg-system/cloudnative-pg tcp/5432",
        "cnpg-system/cloudnative-pg tcp/8000",
    },
}
DNS = {"kube-system/kube-dns udp/53", "kube-system/kube-dns tcp/53"}
EXPECTED_EGRESS = {
    "envoy": DNS | {"api tcp/50051"},
    "api": DNS | {"postgres tcp/5432"},
    "dispatcher": DNS | {"postgres tcp/5432", "nats tcp/4222"},
    "dialer": DNS | {"postgres tcp/5432", "nats tcp/4222"},
    # Webhooks: public addresses on 80 and 443 only, as the notifier's own check.
    "notifier": DNS
    | {"postgres tcp/5432", "nats tcp/4222", "public-internet tcp/80", "public-internet tcp/443"},
    "migrate": DNS | {"postgres tcp/5432"},
    "nats": DNS | {"nats tcp/6222"},
    # The CloudNativePG instance manager calls the Kubernetes API (and the backup store).
    "postgres": DNS | {"anywhere any"},
}
# Peers outside the namespace allowed in: Envoy's clients, and the CloudNativePG operator.
OUTSIDE_SOURCES = {
    "envoy": {"anywhere tcp/8080"},
    **{service: {SCRAPE} for service in ("api", "dispatcher", "dialer", "notifier")},
    "postgres": {"cnpg-system/cloudnative-pg tcp/5432", "cnpg-system/cloudnative-pg tcp/8000"},
}
# Ranges the notifier refuses (services/notifier/addresses.py): closed to it here as well.
NON_PUBLIC = {
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
}


# -- rendering --------------------------------------------------------------------------


@pytest.fixture(scope="module")
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


def of_kind(resources: list[Resource], kind: str) -> dict[str, Resource]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def pod_template(workload: Resource) -> Resource:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template: Resource = spec["template"]
    return template


def workloads(resources: list[Resource]) -> Iterator[Resource]:
    return (r for r in resources if r["kind"] in WORKLOAD_KINDS)


def containers(pod_spec: Resource) -> list[Resource]:
    every: list[Resource] = pod_spec.get("initContainers", []) + pod_spec["containers"]
    return every


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects these labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        ok = {
            "In": present and labels.get(key) in (values or []),
            "NotIn": not present or labels.get(key) not in (values or []),
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not ok:
            return False
    return True


def configmap_env(resources: list[Resource], container: Resource) -> dict[str, str]:
    """The variables a container gets from the ConfigMaps it names in envFrom."""
    maps = of_kind(resources, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]]["data"])
    return env


def service_container(resources: list[Resource], name: str) -> Resource:
    deployment = of_kind(resources, "Deployment")[name]
    matching: list[Resource] = [
        c for c in pod_template(deployment)["spec"]["containers"] if c["name"] == name
    ]
    (container,) = matching
    return container


def setting_names(settings: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    return {
        field.validation_alias
        if isinstance(field.validation_alias, str)
        else f"{prefix}{name}".upper()
        for name, field in settings.model_fields.items()
    }


def setting(resources: list[Resource], service: str, name: str) -> float:
    """A numeric setting as the service gets it: from its ConfigMaps, else its default."""
    env = configmap_env(resources, service_container(resources, service))
    if name in env:
        return float(env[name])
    settings = SERVICES[service]
    prefix = str(settings.model_config.get("env_prefix", ""))
    return float(settings.model_fields[name.removeprefix(prefix).lower()].default)


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (cpu or memory) as a number."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_into_its_namespace(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    resources = rendered[overlay]
    assert resources
    names = [(r["kind"], r["metadata"]["name"]) for r in resources]
    assert len(names) == len(set(names)), "two objects of one kind share a name"
    assert of_kind(resources, "Namespace").keys() == {NAMESPACES[overlay]}
    outside = [
        n
        for r, n in zip(resources, names, strict=True)
        if r["kind"] != "Namespace" and r["metadata"].get("namespace") != NAMESPACES[overlay]
    ]
    assert not outside, f"not in namespace {NAMESPACES[overlay]}: {outside}"


# -- schemas ----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_validate_against_kubernetes_schemas(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    errors: list[str] = []
    for resource in rendered[overlay]:
        name = f"{resource['kind']}/{resource['metadata']['name']}"
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if (resource["apiVersion"], resource["kind"]) not in CUSTOM_RESOURCES:
                errors.append(f"{name}: no schema for {resource['apiVersion']}")
            elif not isinstance(resource.get("spec"), dict):
                errors.append(f"{name}: no spec")
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(part) for part in err.path)
            errors.append(f"{name}: {path}: {err.message}")
    assert not errors, "\n".join(errors)


def test_schema_validation_refuses_a_misspelt_field(rendered: dict[str, list[Resource]]) -> None:
    """Strict validation has teeth: an unknown field (a typo) fails."""
    deployment = copy.deepcopy(of_kind(rendered["prod"], "Deployment")["api"])
    container = pod_template(deployment)["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_postgres_is_a_cloudnativepg_cluster(rendered: dict[str, list[Resource]]) -> None:
    for overlay, instances in (("dev", 1), ("prod", 3)):
        cluster = of_kind(rendered[overlay], "Cluster")["postgres"]
        assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
        assert cluster["spec"]["instances"] == instances
        assert cluster["spec"]["bootstrap"]["initdb"] == {"database": "app", "owner": "app"}
        roles = {r["name"]: r for r in cluster["spec"]["managed"]["roles"]}
        assert roles == {
            db_roles.role_name("app", service): {
                "name": db_roles.role_name("app", service),
                "ensure": "present",
                "login": True,
                "passwordSecret": {"name": f"postgres-role-{service}"},
            }
            for service in db_roles.SERVICES
        }
        assert cluster["spec"]["storage"]["size"]


# -- hardening --------------------------------------------------------------------------


def hardening_problems(resources: list[Resource], workload: Resource) -> list[str]:
    where = f"{workload['kind']}/{workload['metadata']['name']}"
    pod = pod_template(workload)["spec"]
    problems: list[str] = []
    accounts = of_kind(resources, "ServiceAccount")
    account = pod.get("serviceAccountName", "default")
    if account not in accounts:
        problems.append(f"{where}: runs as ServiceAccount {account!r}, not one of its own")
    elif accounts[account].get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: ServiceAccount {account} mounts an API token")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: the pod mounts an API token")
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            problems.append(f"{where}: {host}")
    pod_security = pod.get("securityContext", {})
    for container in containers(pod):
        at = f"{where} container {container['name']}"
        security = {**pod_security, **container.get("securityContext", {})}
        if security.get("runAsNonRoot") is not True:
            problems.append(f"{at}: runAsNonRoot is not set")
        if security.get("runAsUser") == 0:
            problems.append(f"{at}: runs as uid 0")
        if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{at}: no RuntimeDefault seccomp profile")
        own = container.get("securityContext", {})
        if own.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{at}: root filesystem is writable")
        if own.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: privilege escalation is allowed")
        if own.get("privileged"):
            problems.append(f"{at}: privileged")
        capabilities = own.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []) or capabilities.get("add"):
            problems.append(f"{at}: capabilities are not all dropped")
        resources_ = container.get("resources", {})
        for kind in ("requests", "limits"):
            for name in ("cpu", "memory"):
                if name not in resources_.get(kind, {}):
                    problems.append(f"{at}: no {name} {kind}")
        image = container["image"]
        ours = image.split(":")[0] == IMAGE and ":" in image
        pinned = any(p.match(image) for p in THIRD_PARTY_IMAGES.values())
        if not (ours or pinned) or image.endswith(":latest"):
            problems.append(f"{at}: image {image} is neither ours nor a pinned third-party one")
    if workload["kind"] in LONG_RUNNING_KINDS:
        for container in pod["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append(f"{where} container {container['name']}: no {probe}")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_is_hardened(rendered: dict[str, list[Resource]], overlay: str) -> None:
    """Non-root, read-only root filesystem, no capabilities, no privilege escalation, seccomp,
    requests and limits, probes, its own ServiceAccount without an API token."""
    resources = rendered[overlay]
    found = list(workloads(resources))
    assert {w["metadata"]["name"] for w in found} >= {*SERVICES, "envoy", "nats", "migrate"}
    assert not [r for r in resources if r["kind"] == "Pod"], "bare pods are not managed"
    problems = [p for w in found for p in hardening_problems(resources, w)]
    assert not problems, "\n".join(problems)


def test_the_hardening_check_catches_a_lax_workload(rendered: dict[str, list[Resource]]) -> None:
    resources = rendered["prod"]
    lax = copy.deepcopy(of_kind(resources, "Deployment")["dispatcher"])
    container = pod_template(lax)["spec"]["containers"][0]
    del container["securityContext"]["readOnlyRootFilesystem"]
    del container["resources"]["limits"]
    problems = hardening_problems(resources, lax)
    assert any("root filesystem is writable" in p for p in problems)
    assert any("no memory limits" in p for p in problems)


def test_pods_run_as_the_images_user(rendered: dict[str, list[Resource]]) -> None:
    (user,) = re.findall(r"^USER (\d+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    for overlay in OVERLAYS:
        for workload in workloads(rendered[overlay]):
            pod = pod_template(workload)["spec"]
            if any(c["image"].startswith(f"{IMAGE}:") for c in containers(pod)):
                assert pod["securityContext"]["runAsUser"] == int(user), workload["metadata"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_answer_grpc_health_on_a_port_named_grpc(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    resources = rendered[overlay]
    services = of_kind(resources, "Service")
    for name, settings in SERVICES.items():
        deployment = of_kind(resources, "Deployment")[name]
        labels = pod_template(deployment)["metadata"]["labels"]
        container = service_container(resources, name)
        assert container["image"].startswith(f"{IMAGE}:")
        assert container["command"] == ["python", "-m", f"services.{name}"]
        (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "grpc"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            # Native gRPC probe against the standard health service (overall status "").
            assert container[probe]["grpc"] == {"port": port}, (name, probe)
        prefix = str(settings.model_config["env_prefix"])
        address = configmap_env(resources, container)[f"{prefix}GRPC_ADDRESS"]
        assert address == f"0.0.0.0:{port}", f"{name} must listen where the kubelet probes"
        exposing = [
            s
            for s in services.values()
            if s["spec"].get("selector")
            and selects({"matchLabels": s["spec"]["selector"]}, labels)
            and any(
                p["name"] == "grpc" and p["targetPort"] in ("grpc", port)
                for p in s["spec"]["ports"]
            )
        ]
        assert exposing, f"no Service exposes {name}'s grpc port"


# -- settings and secrets ---------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_come_from_configmaps_and_secrets_from_secrets(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    resources = rendered[overlay]
    for name, settings in SERVICES.items():
        container = service_container(resources, name)
        assert container["envFrom"], f"{name} takes no ConfigMap"
        config = configmap_env(resources, container)
        unknown = set(config) - setting_names(settings)
        if name in ("api", "dispatcher"):  # both apply the operator's tenant defaults
            unknown -= setting_names(TenantDefaults)
        assert not unknown, f"{name} does not read {unknown} (a typo?)"
        assert not [k for k in config if SECRET_LOOKING.search(k)], f"{name}: secret in config"
        from_secrets = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert set(from_secrets) == SECRET_SETTINGS[name], name
        assert not set(from_secrets) - setting_names(settings), name
        plain = [e["name"] for e in container.get("env", []) if "valueFrom" not in e]
        assert not plain, f"{name}: settings belong in its ConfigMap: {plain}"
        assert {k: from_secrets["DATABASE_URL"][k] for k in ("name", "key")} == role_secret(name)


def test_jwt_keys_come_from_one_jwks_secret(rendered: dict[str, list[Resource]]) -> None:
    for overlay in OVERLAYS:
        resources = rendered[overlay]
        mounts: dict[str, str] = {}
        for name in ("api", "envoy"):
            pod = pod_template(of_kind(resources, "Deployment")[name])["spec"]
            (volume,) = [v for v in pod["volumes"] if v.get("secret")]
            assert volume["secret"]["secretName"] == "callback-scheduler-jwks"
            assert volume["secret"]["items"] == [{"key": "jwks.json", "path": "jwks.json"}]
            (mount,) = [
                m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]
            ]
            mounts[name] = mount["mountPath"]
        api_env = configmap_env(resources, service_container(resources, "api"))
        assert api_env["API_JWKS_FILE"] == f"{mounts['api']}/jwks.json"
        assert str(envoy_config.SETTINGS.jwks_file) == f"{mounts['envoy']}/jwks.json"


# -- migrations, timing -----------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_run_before_the_services(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    """The migrate Job upgrades the schema; each service waits for it in an init container."""
    resources = rendered[overlay]
    job = of_kind(resources, "Job")["migrate"]
    (migrate,) = pod_template(job)["spec"]["containers"]
    assert migrate["command"] == [
        "sh",
        "-c",
        "alembic upgrade head && python -m services.common.db_roles",
    ]
    assert migrate["env"][0]["valueFrom"]["secretKeyRef"] == DATABASE_SECRET
    for name in SERVICES:
        pod = pod_template(of_kind(resources, "Deployment")[name])["spec"]
        waits = [c for c in pod.get("initContainers", []) if c["image"] == migrate["image"]]
        assert waits, f"{name} does not wait for the migrations"
        assert "alembic current --check-heads" in " ".join(waits[0]["command"])
        assert waits[0]["env"][0]["valueFrom"]["secretKeyRef"] == role_secret(name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_call_timeouts_fit_the_lease_and_the_dialers_grace_period(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    resources = rendered[overlay]
    # A rings, then B rings, then they talk (DialerSettings.longest_call_seconds).
    longest_call = 2 * setting(resources, "dialer", "DIALER_RING_TIMEOUT_SECONDS") + setting(
        resources, "dialer", "DIALER_MAX_CALL_SECONDS"
    )
    assert setting(resources, "dispatcher", "DISPATCHER_ATTEMPT_LEASE_SECONDS") > longest_call
    dialer = pod_template(of_kind(resources, "Deployment")["dialer"])["spec"]
    # A dialer told to stop finishes its calls first; the kubelet must not kill it sooner.
    assert dialer["terminationGracePeriodSeconds"] >= longest_call


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_dispatchers_know_the_dialers_capacity(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    """The fair share between tenants holds only if the dispatchers know how many calls the
    dialers carry in all."""
    resources = rendered[overlay]
    dialers = int(of_kind(resources, "Deployment")["dialer"]["spec"].get("replicas", 1))
    per_dialer = setting(resources, "dialer", "DIALER_MAX_CONCURRENT_CALLS")
    assert setting(resources, "dispatcher", "DISPATCHER_DIALER_CAPACITY") == dialers * per_dialer


# -- replicas, budgets, spread ----------------------------------------------------------


def effective_min_replicas(resources: list[Resource], kind: str, name: str) -> int:
    """Replicas of a workload: its autoscaler's minimum, else its own count (default 1)."""
    for hpa in of_kind(resources, "HorizontalPodAutoscaler").values():
        target = hpa["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) == (kind, name):
            return int(hpa["spec"]["minReplicas"])
    return int(of_kind(resources, kind)[name]["spec"].get("replicas", 1))


def nats_config_files(resources: list[Resource]) -> dict[str, str]:
    """The files of NATS's config folder (its ConfigMap): nats.conf and what it includes."""
    statefulset = of_kind(resources, "StatefulSet")["nats"]
    (volume,) = [v for v in pod_template(statefulset)["spec"]["volumes"] if "configMap" in v]
    files: dict[str, str] = of_kind(resources, "ConfigMap")[volume["configMap"]["name"]]["data"]
    return files


def nats_config(resources: list[Resource]) -> str:
    return nats_config_files(resources)["nats.conf"]


def stream_replicas(resources: list[Resource]) -> int:
    env = configmap_env(resources, service_container(resources, "dispatcher"))
    return int(env["NATS_STREAM_REPLICAS"])


def test_dev_runs_one_of_everything_on_small_resources(
    rendered: dict[str, list[Resource]],
) -> None:
    dev, prod = rendered["dev"], rendered["prod"]
    assert not of_kind(dev, "HorizontalPodAutoscaler")
    for name in of_kind(dev, "Deployment"):
        assert effective_min_replicas(dev, "Deployment", name) == 1, name
    assert of_kind(dev, "StatefulSet")["nats"]["spec"]["replicas"] == 1
    assert stream_replicas(dev) == 1
    lone = not re.search(r"^\s*cluster\s*[{:]", nats_config(dev), flags=re.MULTILINE)
    assert lone, "a lone NATS server with cluster routes never has a JetStream quorum"
    for workload in workloads(dev):
        twin = of_kind(prod, workload["kind"])[workload["metadata"]["name"]]
        sizes = zip(
            containers(pod_template(workload)["spec"]),
            containers(pod_template(twin)["spec"]),
            strict=True,
        )
        for small, large in sizes:
            for kind in ("requests", "limits"):
                for name, value in small["resources"][kind].items():
                    assert quantity(value) <= quantity(large["resources"][kind][name]), (
                        workload["metadata"]["name"],
                        small["name"],
                        kind,
                        name,
                    )


def test_prod_runs_enough_replicas(rendered: dict[str, list[Resource]]) -> None:
    prod = rendered["prod"]
    for name, minimum in PROD_MIN_REPLICAS.items():
        assert effective_min_replicas(prod, "Deployment", name) >= minimum, name
    for hpa in of_kind(prod, "HorizontalPodAutoscaler").values():
        target = hpa["spec"]["scaleTargetRef"]
        scaled = of_kind(prod, target["kind"])[target["name"]]
        # Left to the autoscaler: a `replicas` here would reset it on every apply.
        assert "replicas" not in scaled["spec"], target["name"]
        assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert of_kind(prod, "StatefulSet")["nats"]["spec"]["replicas"] == 3


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


NATS_TLS_DIR = "/etc/nats-tls/"


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


def test_prod_has_disruption_budgets_and_spreads_pods(rendered: dict[str, list[Resource]]) -> None:
    prod = rendered["prod"]
    budgets = of_kind(prod, "PodDisruptionBudget").values()
    for workload in workloads(prod):
        if workload["kind"] not in LONG_RUNNING_KINDS:
            continue
        name = workload["metadata"]["name"]
        pod = pod_template(workload)
        labels = pod["metadata"]["labels"]
        covering = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        assert len(covering) == 1, f"{name}: {len(covering)} PodDisruptionBudgets"
        assert covering[0]["spec"].get("maxUnavailable") == 1, name
        spread = [
            c
            for c in pod["spec"].get("topologySpreadConstraints", [])
            if selects(c["labelSelector"], labels)
        ]
        keys = {c["topologyKey"] for c in spread}
        anti = pod["spec"].get("affinity", {}).get("podAntiAffinity", {})
        required = anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
        if any(t["topologyKey"] == "kubernetes.io/hostname" for t in required):
            keys.add("kubernetes.io/hostname")
        assert keys >= {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, name
    cluster = of_kind(prod, "Cluster")["postgres"]["spec"]["affinity"]
    assert cluster["podAntiAffinityType"] == "required"


# -- network policies -------------------------------------------------------------------


def component_labels(resources: list[Resource]) -> dict[str, dict[str, str]]:
    """Pod labels by component name, with the pods the CloudNativePG operator makes."""
    labels = {
        w["metadata"]["name"]: pod_template(w)["metadata"]["labels"] for w in workloads(resources)
    }
    for cluster in of_kind(resources, "Cluster"):
        labels[cluster] = {"cnpg.io/cluster": cluster}
    return labels


def peer_name(peer: Resource) -> str:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        if block["cidr"] in ("0.0.0.0/0", "::/0") and NON_PUBLIC & set(block.get("except", [])):
            return "public-internet"
        return f"cidr:{block['cidr']}"
    pods = peer.get("podSelector", {}).get("matchLabels", {})
    pod = pods.get("app.kubernetes.io/name") or pods.get("cnpg.io/cluster") or pods.get("k8s-app")
    if "namespaceSelector" in peer:
        namespace = peer["namespaceSelector"].get("matchLabels", {})
        return f"{namespace.get('kubernetes.io/metadata.name', 'any-namespace')}/{pod or 'any'}"
    return str(pod or "any-pod")


def allowed(resources: list[Resource], labels: dict[str, str], direction: str) -> set[str]:
    """What the NetworkPolicies let in (ingress) or out (egress) of pods with these labels,
    as "<peer> <protocol>/<port>"; "anywhere" for a rule without peers."""
    peers_key = "from" if direction == "ingress" else "to"
    policy_type = direction.capitalize()
    result: set[str] = set()
    for policy in of_kind(resources, "NetworkPolicy").values():
        spec = policy["spec"]
        if policy_type not in spec["policyTypes"] or not selects(spec["podSelector"], labels):
            continue
        for rule in spec.get(direction, []):
            peers = [peer_name(p) for p in rule.get(peers_key, [])] or ["anywhere"]
            ports = [
                f"{p.get('protocol', 'TCP').lower()}/{p.get('port', 'any')}"
                for p in rule.get("ports", [])
            ] or ["any"]
            result |= {f"{peer} {port}" for peer in peers for port in ports}
    return result


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_is_denied_unless_allowed(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    deny = [
        p
        for p in of_kind(rendered[overlay], "NetworkPolicy").values()
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert deny, "no default-deny NetworkPolicy"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_envoy_is_reachable_from_outside(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    resources = rendered[overlay]
    namespace_peers = set(component_labels(resources))
    outside = {
        name: {
            rule
            for rule in allowed(resources, labels, "ingress")
            if rule.split(" ")[0] not in namespace_peers
        }
        for name, labels in component_labels(resources).items()
    }
    assert {name: rules for name, rules in outside.items() if rules} == OUTSIDE_SOURCES


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_component_reaches_only_what_it_uses(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    resources = rendered[overlay]
    components = component_labels(resources)
    assert set(components) == set(EXPECTED_EGRESS), "add the new component's expected traffic"
    ingress = {name: allowed(resources, labels, "ingress") for name, labels in components.items()}
    egress = {name: allowed(resources, labels, "egress") for name, labels in components.items()}
    assert ingress == EXPECTED_INGRESS
    assert egress == EXPECTED_EGRESS


def test_webhooks_cannot_reach_private_networks(rendered: dict[str, list[Resource]]) -> None:
    policy = of_kind(rendered["prod"], "NetworkPolicy")["notifier"]
    blocks = [
        p["ipBlock"] for rule in policy["spec"]["egress"] for p in rule["to"] if "ipBlock" in p
    ]
    closed = {cidr for block in blocks for cidr in block.get("except", [])}
    assert {block["cidr"] for block in blocks} == {"0.0.0.0/0", "::/0"}
    assert closed == NON_PUBLIC


# -- Envoy ------------------------------------------------------------------------------


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


# -- image ------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    run = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
