"""deploy/metrics: the alert rules and the Grafana dashboard name only metrics the
services export, and the rules file is what Prometheus loads (promtool checks it too
where it is installed: Debian's `prometheus` package, not installed by CI)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.applications import Starlette

from services.metrics import (
    BuildMetrics,
    ConsumerProbe,
    ExecutorJobs,
    HttpMetrics,
    JobMetrics,
    ProjectionProbe,
    ServiceMetrics,
    WarmWorkers,
    WebhookMetrics,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "metrics"
RULES = DEPLOY / "alerts.yaml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
_NAME = re.compile(r"\bclinai_[a-z0-9_]+\b")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


async def _zero() -> int:
    return 0


def exported_names() -> set[str]:
    """Every sample name any service exports."""
    metrics = ServiceMetrics("all")
    JobMetrics(metrics)
    BuildMetrics(metrics)
    WebhookMetrics(metrics)
    HttpMetrics(Starlette(), metrics=metrics)
    ConsumerProbe(metrics, None, "CLINAI", "executor")  # type: ignore[arg-type]
    ProjectionProbe(metrics, _zero, _zero)
    WarmWorkers(metrics, dict, dict)
    ExecutorJobs(metrics, int, int)
    names = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_rule_names_metrics_that_exist() -> None:
    exported = exported_names()
    rules = _rules()
    assert rules
    for rule in rules:
        named = set(_NAME.findall(rule["expr"]))
        assert named, rule["alert"]
        assert named <= exported, (rule["alert"], named - exported)
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


def test_the_rules_cover_lag_backlog_failures_and_disabled_endpoints() -> None:
    used = {name for rule in _rules() for name in _NAME.findall(rule["expr"])}
    for name in (
        "clinai_projection_lag_events",
        "clinai_consumer_pending_messages",
        "clinai_jobs_ended_total",
        "clinai_webhook_endpoints_disabled",
    ):
        assert name in used, name


def test_every_dashboard_panel_queries_metrics_that_exist() -> None:
    exported = exported_names()
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    shown: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            named = set(_NAME.findall(target["expr"]))
            assert named and named <= exported, (panel["title"], named - exported)
            shown |= named
    # Every metric a service exports is on a panel.
    families = {
        n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for n in shown
    }
    missing = {
        n
        for n in exported
        if not n.endswith(("_count", "_sum")) and n.removesuffix("_bucket") not in families
    }
    assert not missing, missing


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    checked = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
