"""deploy/compose.yaml, checked offline (CI cannot pull the images it names): valid
against the Compose Specification's JSON Schema (check-jsonschema's vendored copy), and
by Debian's docker-compose (`config`, which resolves every variable) where installed;
every variable documented in deploy/.env.example and every one there used; every
ClinAI variable a real setting; volumes and dependencies declared; the services that
run sandboxes given the container options bubblewrap needs."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from services.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
CLINAI_SERVICES = {"api", "projector", "builder", "executor", "notifier"}
_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)")


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _documented() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {name: value for name, value in pairs}


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_compose_file_matches_the_compose_specification(tmp_path: Path) -> None:
    checked = _check_jsonschema(COMPOSE)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The check is live: a service with a key Compose does not know is refused.
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("  notifier:\n", "  notifier:\n    replica: 2\n"))
    refused = _check_jsonschema(broken)
    assert refused.returncode != 0 and "replica" in refused.stdout + refused.stderr


def test_docker_compose_resolves_the_file_with_the_example_environment() -> None:
    docker_compose = shutil.which("docker-compose")
    if docker_compose is None:
        pytest.skip("Debian's docker-compose is not installed (.ci/run installs it)")
    secrets = {
        "POSTGRES_PASSWORD": "p" * 16,
        "MINIO_ROOT_PASSWORD": "m" * 16,
        "NATS_TOKEN": "t" * 32,
    }
    env = {
        **{k: v for k, v in os.environ.items() if k not in _documented()},
        **_documented(),
        **secrets,
        "CLINAI_SIGNING_KEY": "s" * 40,
    }
    done = subprocess.run(
        [docker_compose, "--project-directory", str(DEPLOY), "-f", str(COMPOSE), "config"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    api_env = resolved["services"]["api"]["environment"]
    assert api_env["CLINAI_DATABASE_URL"] == f"postgresql://clinai:{'p' * 16}@postgres:5432/clinai"
    token = "t" * 32
    assert api_env["CLINAI_NATS_URL"] == ",".join(
        f"nats://{token}@nats-{n}:4222" for n in (1, 2, 3)
    )
    assert f"--auth={token}" in resolved["services"]["nats-1"]["command"]
    # A required secret left unset stops compose with the variable's name.
    del env["CLINAI_SIGNING_KEY"]
    unset = subprocess.run(
        [docker_compose, "--project-directory", str(DEPLOY), "-f", str(COMPOSE), "config"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert unset.returncode != 0 and "CLINAI_SIGNING_KEY" in unset.stderr


def test_every_variable_is_documented_in_the_env_example_and_every_one_there_used() -> None:
    used = set(_VARIABLE.findall(COMPOSE.read_text())) | {"COMPOSE_PROJECT_NAME"}
    assert used == set(_documented())


def test_every_clinai_variable_is_a_setting() -> None:
    settings = {f"CLINAI_{f.name.upper()}" for f in msgspec.structs.fields(Settings)}
    if importlib.util.find_spec("services.metrics") is None:  # until the metrics land
        settings |= {"CLINAI_METRICS_HOST", "CLINAI_METRICS_PORT", "CLINAI_METRICS_TOKEN"}
    services = _compose()["services"]
    for name in CLINAI_SERVICES:
        variables = {v for v in services[name]["environment"] if v.startswith("CLINAI_")}
        assert variables - settings == set(), name


def test_the_topology_is_complete_and_consistent() -> None:
    compose = _compose()
    services: dict[str, Any] = compose["services"]
    declared = set(compose["volumes"])
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source in declared, f"{name} mounts undeclared volume {source}"
        assert "healthcheck" in service or name == "minio-bucket", name
    for name in CLINAI_SERVICES:
        assert services[name]["command"] == ["serve", name]
        assert services[name]["environment"]["CLINAI_STREAM_REPLICAS"] == "3"
    nats = [name for name in services if name.startswith("nats-")]
    assert len(nats) == 3
    for name in nats:
        command = services[name]["command"]
        assert "--jetstream" in command and f"--name={name}" in command
        assert (
            "--auth=${NATS_TOKEN:?set NATS_TOKEN in deploy/.env}" in command
        )  # no anonymous client
        routes = next(arg for arg in command if arg.startswith("--routes="))
        assert all(f"nats://{other}:6222" in routes for other in nats)
    # The process runtime's sandbox: bubblewrap's namespaces and its own /proc.
    for name in ("builder", "executor"):
        options = services[name]["security_opt"]
        assert {"seccomp=unconfined", "systempaths=unconfined"} <= set(options), name
        assert "runtime:/var/lib/clinai/runtime" in services[name]["volumes"], name
