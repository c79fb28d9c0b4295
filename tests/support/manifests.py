"""deploy/k8s as `kubectl kustomize` renders it: the objects of each overlay, and readers of
what a workload gets (its pod template, containers, settings, NATS config files)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic_settings import BaseSettings

from deploy.local.stack import ROOT
from services.api.settings import ApiSettings
from services.dialer.settings import DialerSettings
from services.dispatcher.settings import DispatcherSettings
from services.notifier.settings import NotifierSettings

Resource = dict[str, Any]


K8S = ROOT / "deploy" / "k8s"


DOCKERFILE = ROOT / "Dockerfile"


OVERLAYS = ("dev", "prod")


IMAGE = "callback-scheduler"


WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}


LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}


SERVICES: dict[str, type[BaseSettings]] = {
    "api": ApiSettings,
    "dispatcher": DispatcherSettings,
    "dialer": DialerSettings,
    "notifier": NotifierSettings,
}


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
