"""deploy/k8s's NetworkPolicies: everything is denied unless allowed, only Envoy is reachable
from outside, each component reaches only what it uses, webhooks cannot reach private
networks. Checked on what `kubectl kustomize` renders."""

from __future__ import annotations

import pytest

from tests.support.manifests import OVERLAYS, Resource, of_kind, pod_template, selects, workloads

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
