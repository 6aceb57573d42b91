"""`clinai login`, `push`, `run`, the listings, `logs` and `cancel` against a real stack
(projector, API, builder and executor on the process runtime), run as a user runs them."""

from __future__ import annotations

import asyncio
import io
import json
import os
import queue
import shutil
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from services.packages import zip_folder
from tests.api._client import EXAMPLE_MODEL, Client, new_user
from tests.api.conftest import Stack, start_services, stop_services, wait_ready
from tests.cli.conftest import Clinai, png

PACKAGES = Path(__file__).resolve().parents[1] / "packages"


def _model_folder(tmp_path: Path, source: Path) -> Path:
    """A copy of a package folder with a file of its own: a new package, built here."""
    folder = tmp_path / source.name
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "build-id.txt").write_text(uuid.uuid4().hex)
    return folder


def test_login_keeps_the_key_in_a_0600_file_and_the_environment_overrides_it(
    cli_stack: Stack,
    user_env: dict[str, str],
    clinai: Clinai,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = user_env["CLINAI_API_KEY"]
    monkeypatch.delenv("CLINAI_API_URL")
    monkeypatch.delenv("CLINAI_API_KEY")
    monkeypatch.setattr(sys, "stdin", io.StringIO(key + "\n"))
    previous = os.umask(0)  # the file is 0600 from its creation, whatever the umask
    try:
        logged = clinai("login", "--url", cli_stack.url, "--key-stdin")
    finally:
        os.umask(previous)
    assert logged.code == 0, logged
    assert key not in logged.out + logged.err
    config = Path(user_env["XDG_CONFIG_HOME"]) / "clinai" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert json.loads(config.read_text()) == {"api_url": cli_stack.url, "api_key": key}

    listed = clinai("models")  # from the file alone
    assert listed.code == 0, listed
    monkeypatch.setenv("CLINAI_API_KEY", "clinai_not-a-key")
    refused = clinai("models")
    assert refused.code == 1 and "unknown or revoked" in refused.err
    monkeypatch.delenv("CLINAI_API_KEY")
    monkeypatch.setenv("CLINAI_API_URL", "http://127.0.0.1:9")  # nothing listens there
    dead = clinai("models")
    assert dead.code == 1
    assert "could not reach the ClinAI API at http://127.0.0.1:9" in dead.err
    assert "clinai up" in dead.err


def test_push_builds_example_model_then_run_downloads_its_output(
    user_env: dict[str, str], clinai: Clinai, tmp_path: Path
) -> None:
    pushed = clinai("push", _model_folder(tmp_path, EXAMPLE_MODEL), "--model", "gray")
    assert pushed.code == 0, pushed
    assert "created model gray" in pushed.out
    assert "$ unpack the package" in pushed.out  # the build log, followed live
    version_id = pushed.out.split()[-2]
    assert version_id.startswith("ver_") and pushed.out.rstrip().endswith(f"{version_id} ready")

    photo = png(tmp_path / "photo.png", (40, 30))
    ran = clinai("run", "gray", f"input=@{photo}", "levels=4", "-o", tmp_path / "out")
    assert ran.code == 0, ran
    assert '"width": 40' in ran.out
    with Image.open(tmp_path / "out" / "grayscale.png") as gray:
        assert gray.mode == "L" and gray.size == (40, 30)
        assert len(gray.getcolors() or []) <= 4

    as_json = clinai("run", version_id, f"input=@{photo}", "--wait", "--json", "--deadline", "600")
    assert as_json.code == 0, as_json
    job = json.loads(as_json.out)
    assert job["status"] == "succeeded" and job["version_id"] == version_id
    assert job["deadline"] is not None  # --deadline reached the job
    assert job["result"]["height"] == 30 and job["outputs"][0]["name"] == "grayscale.png"

    refused = clinai("run", "gray", f"input=@{photo}", "levels=1", "--wait")
    assert refused.code == 1
    assert "input 'levels': expected an integer >= 2 and <= 256, got 1" in refused.err
    no_time = clinai("run", "gray", f"input=@{photo}", "--deadline", "0")
    assert no_time.code == 1 and "deadline_s" in no_time.err, no_time
    not_a_number = clinai("run", "gray", f"input=@{photo}", "levels=many")
    assert not_a_number.code == 1 and "'many' is not an integer" in not_a_number.err

    models = clinai("models")
    assert models.code == 0 and "\tgray\t1\tprivate\t" in models.out
    versions = clinai("versions", "gray", "--json")
    assert [(v["id"], v["status"]) for v in json.loads(versions.out)] == [(version_id, "ready")]
    jobs = clinai("jobs", "--status", "succeeded")
    assert jobs.code == 0 and jobs.out.count(version_id) == 2
    build_log = clinai("logs", version_id)
    assert build_log.code == 0 and "build finished" in build_log.out


def test_a_broken_package_fails_before_any_upload_with_the_servers_message(
    cli_stack: Stack, user_env: dict[str, str], clinai: Clinai, tmp_path: Path
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "predict.py").write_text("def predict(image):\n    return {}\n")
    pushed = clinai("push", folder)
    assert pushed.code == 1

    async def servers_detail() -> str:
        client = Client(cli_stack.url, user_env["CLINAI_API_KEY"])
        model = (await client.post("/v1/models", json={"name": "server-side"})).body
        path = f"/v1/models/{model['id']}/versions"
        reply = await client.upload(path, "package", "p.zip", zip_folder(folder))
        assert reply.status == 422, reply
        return str(reply.body["detail"])

    detail = asyncio.run(servers_detail())
    assert "run is missing" in detail
    assert f"clinai push: {folder} is not a valid package: {detail}" in pushed.err
    assert "broken" not in clinai("models").out  # nothing was made


def test_push_makes_a_model_of_its_own_beside_another_users_public_one(
    cli_stack: Stack,
    user_env: dict[str, str],
    clinai: Clinai,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = _model_folder(tmp_path, PACKAGES / "noop")
    assert clinai("push", folder, "--model", "shared").code == 0
    [theirs] = json.loads(clinai("models", "--json").out)

    async def publish_and_make_another_user() -> str:
        owner = Client(cli_stack.url, user_env["CLINAI_API_KEY"])
        reply = await owner.request(
            "PATCH", f"/v1/models/{theirs['id']}", json={"visibility": "public"}
        )
        assert reply.status == 202, reply
        return str((await new_user(cli_stack.url, cli_stack.admin_key, "other")).key)

    monkeypatch.setenv("CLINAI_API_KEY", asyncio.run(publish_and_make_another_user()))
    pushed = clinai("push", folder, "--model", "shared")
    assert pushed.code == 0, pushed
    assert "created model shared" in pushed.out
    listed = json.loads(clinai("models", "--json").out)
    assert sorted(m["id"] == theirs["id"] for m in listed) == [False, True]


def test_logs_cancel_and_a_typed_float(
    user_env: dict[str, str], clinai: Clinai, tmp_path: Path
) -> None:
    for name in ("noop", "sleeper", "typed"):
        assert clinai("push", _model_folder(tmp_path, PACKAGES / name), "--model", name).code == 0
    data = tmp_path / "data.txt"
    data.write_text("some input")

    printed = clinai("run", "noop", f"input=@{data}", "--wait", "--json")
    assert printed.code == 0, printed
    job_id = json.loads(printed.out)["id"]
    log = clinai("logs", job_id)
    assert log.code == 0 and "hello from run" in log.out

    typed = clinai("run", "typed", f"image=@{data}", "scale=1", "tags=x,y", "--wait", "--json")
    assert typed.code == 0, typed
    result = json.loads(typed.out)["result"]
    assert (result["scale"], result["scale_type"], result["tags"]) == (1.0, "float", ["x", "y"])

    queued = clinai("run", "sleeper", f"input=@{data}")
    assert queued.code == 0, queued
    sleeper_job = queued.out.split()[0]
    assert sleeper_job.startswith("job_")
    canceled = clinai("cancel", sleeper_job)
    assert canceled.code == 0 and canceled.out.startswith(sleeper_job)
    followed = clinai("logs", sleeper_job, "--follow")  # returns once the job has ended
    assert followed.code == 0, followed
    listed = clinai("jobs", "--status", "canceled", "--json")
    assert [j["id"] for j in json.loads(listed.out)] == [sleeper_job]
    unknown = clinai("cancel", "job_unknown")
    assert unknown.code == 1 and "not found" in unknown.err


def test_a_follower_carries_on_across_an_api_restart(
    cli_stack: Stack, user_env: dict[str, str], clinai: Clinai, tmp_path: Path
) -> None:
    """Last in the module: it restarts the module's API."""
    assert clinai("push", _model_folder(tmp_path, PACKAGES / "sleeper"), "--model", "s").code == 0
    data = tmp_path / "data.txt"
    data.write_text("x")
    job_id = clinai("run", "s", f"input=@{data}").out.split()[0]
    argv = [sys.executable, "-m", "services.cli", "logs", job_id, "--follow"]
    with subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as follower:
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(x) for x in follower.stderr or []])
        reader.start()
        try:
            deadline = time.monotonic() + 60
            seen: list[str] = []
            while not any(line.startswith(f"{job_id} running") for line in seen):  # seen live
                seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            stop_services([cli_stack.procs[1]])  # the API, while the follower reads from it
            while "is not answering" not in seen[-1]:  # it waits for the API to come back
                seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            cli_stack.procs[1:2] = start_services(cli_stack.env, ["api"])
            wait_ready(cli_stack.url, cli_stack.procs)
            assert clinai("cancel", job_id).code == 0
            assert follower.wait(timeout=60) == 0
        finally:
            follower.kill()
            follower.wait()
            reader.join(timeout=10)
    rest = "".join(seen) + "".join(_drained(lines))
    assert f"{job_id} canceling" in rest and "could not reach" not in rest


def _drained(lines: queue.Queue[str]) -> list[str]:
    out: list[str] = []
    while not lines.empty():
        out.append(lines.get_nowait())
    return out
