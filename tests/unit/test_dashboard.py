"""The Grafana dashboard is built on series the services really export."""

from __future__ import annotations

import json
import re

from prometheus_client import REGISTRY

import services.common.metrics  # noqa: F401 - registers the series
from deploy.local.stack import ROOT


def test_every_dashboard_query_uses_an_exported_series() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/callback-scheduler.json").read_text())
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_count", "_sum"]}
    exported = {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("callback_")
        for suffix in suffixes[family.type]
    }
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(callback_[a-z_]+)\b", target["expr"])
    }
    assert used, "the dashboard queries nothing"
    assert used <= exported, used - exported
