"""`clinai up` (what `make up` runs) from nothing: it starts, answers, stops on Ctrl-C,
and starts again with the same data."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.api.conftest import free_port
from tests.dashboard._person import Person


def _request(url: str, key: str | None = None, body: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def _start(data_dir: Path, port: int) -> tuple[subprocess.Popen[str], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINAI_") and k != "GOMAXPROCS"}
    log = data_dir.with_name(data_dir.name + ".log")  # what it said, should it fail
    with log.open("a") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--data-dir", str(data_dir),
             "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith("Press Ctrl-C"):
            return proc, lines
    proc.kill()
    proc.wait()
    proc.stdout.close()
    said = log.read_text(errors="replace").splitlines()[-15:]
    pytest.fail(f"clinai up did not come up: {lines}; its log ends: {said}")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The name (field 2) may hold spaces: the parent pid is the 2nd field after it.
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
    found = [pid]
    for child in found:
        found += [p for p, parent in parents.items() if parent == child]
    return found[1:]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


async def _admin_sets_password_and_signs_in(url: str, token: str) -> bool:
    password = "the admin's own password"
    async with Person(url) as admin:
        status, _, _ = await admin.form("/invitation", {"token": token, "password": password})
        assert status == 303
    async with Person(url) as admin:
        return await admin.sign_in("admin", password) == 303


def test_up_starts_stops_and_keeps_its_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    proc, lines = _start(data_dir, port)
    try:
        assert f"ClinAI is up: {url}" in lines
        announced = next(n for n, line in enumerate(lines) if line.startswith("Admin API key"))
        key = lines[announced + 1].strip()
        assert key.startswith("clinai_")
        assert (data_dir / "admin.key").read_text().strip() == key
        assert f"Dashboard: {url}/ (user name: admin)" in lines
        invited = next(n for n, line in enumerate(lines) if "dashboard password" in line)
        link = lines[invited + 1].strip()
        assert link.startswith(f"{url}/invitation#usr_admin.")
        assert asyncio.run(_admin_sets_password_and_signs_in(url, link.partition("#")[2]))
        assert _request(f"{url}/readyz")["status"] == "ready"
        created = _request(f"{url}/v1/models", key, {"name": "kept"})
        # The whole stack runs under SCHED_BATCH, the embedded NATS on one Go thread.
        stack = _descendants(proc.pid)
        commands = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in stack}
        assert any(b"nats-server" in c for c in commands.values())
        assert any(b"postgres" in c for c in commands.values())
        assert sum(b"serve\0" in c for c in commands.values()) == 5
        assert os.sched_getscheduler(proc.pid) == os.SCHED_BATCH
        assert {pid: os.sched_getscheduler(pid) for pid in stack} == dict.fromkeys(
            stack, os.SCHED_BATCH
        )
        nats_pid = next(pid for pid, c in commands.items() if b"nats-server" in c)
        assert _environ(nats_pid)["GOMAXPROCS"] == "1"
        # What was answered 202 survives a power loss: JetStream syncs each append.
        assert 'sync_interval: "always"' in (data_dir / "nats" / "nats-server.conf").read_text()
    finally:
        _stop(proc)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/healthz", timeout=2)

    proc, lines = _start(data_dir, port)
    try:
        assert not any(line.startswith("  clinai_") for line in lines)  # no new admin key
        assert _request(f"{url}/v1/me", key)["is_admin"] is True
        model = _request(f"{url}/v1/models/{created['id']}?after_seq={created['seq']}", key)
        assert model["name"] == "kept"
    finally:
        _stop(proc)


def test_up_on_a_port_another_program_holds_says_so_and_exits(tmp_path: Path) -> None:
    """Before, it waited forever (for the stranger on the port to answer as the API)
    and ignored SIGTERM meanwhile."""
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLINAI_")}
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "up", "--data-dir", str(tmp_path / "d"),
             "--port", str(port)],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"cannot serve the API on 127.0.0.1:{port}" in done.stderr, done.stderr
    assert "--port" in done.stderr and "Traceback" not in done.stderr, done.stderr
