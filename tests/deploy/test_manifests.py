"""deploy/k8s: every overlay renders, validates against the Kubernetes schemas, and keeps the
rules of the issue (hardened workloads, gRPC health probes, config and secrets, migrations
first, replicas, disruption budgets, spread).

The rules are checked on what `kubectl kustomize` renders, for every workload found there,
so a new manifest that leaves one out fails here.
"""

from __future__ import annotations

import copy
import re

import kubernetes_validate
import pytest

from deploy.k8s import envoy_config
from services.common import db_roles
from services.common.tenancy import TenantDefaults
from tests.support.manifests import (
    DOCKERFILE,
    IMAGE,
    LONG_RUNNING_KINDS,
    OVERLAYS,
    SERVICES,
    Resource,
    configmap_env,
    containers,
    nats_config,
    of_kind,
    pod_template,
    quantity,
    selects,
    service_container,
    setting,
    setting_names,
    stream_replicas,
    workloads,
)

NAMESPACES = {"dev": "callback-scheduler-dev", "prod": "callback-scheduler"}


# The Kubernetes release whose schemas the rendered objects must satisfy.
KUBERNETES_VERSION = "1.32"


# Custom resources: no schema offline, checked below by hand.
CUSTOM_RESOURCES = {("postgresql.cnpg.io/v1", "Cluster")}


# Images that are not ours, pinned to a version.
THIRD_PARTY_IMAGES = {"nats": re.compile(r"^nats:\d+\.\d+\.\d+-alpine$")}


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


def effective_min_replicas(resources: list[Resource], kind: str, name: str) -> int:
    """Replicas of a workload: its autoscaler's minimum, else its own count (default 1)."""
    for hpa in of_kind(resources, "HorizontalPodAutoscaler").values():
        target = hpa["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) == (kind, name):
            return int(hpa["spec"]["minReplicas"])
    return int(of_kind(resources, kind)[name]["spec"].get("replicas", 1))


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
