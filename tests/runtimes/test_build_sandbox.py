"""A process-runtime build runs a requirement's code (an sdist's build backend) in a
sandbox: it reaches nothing of the host's data folder nor any other host folder."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from aiohttp import web

from services.runtimes.base import BuildFailedError
from services.runtimes.process import ProcessRuntime
from tests._infra import http_files, needs_bubblewrap
from tests.runtimes.conftest import PACKAGES, process_config

pytestmark = pytest.mark.sandbox

_BACKEND = """
import os

found = []
try:
    found.append("READ:" + open({key!r}).read())
except OSError as err:
    found.append("READ-FAILED:" + type(err).__name__)
try:
    with open({written!r}, "w") as out:
        out.write("pwned")
    found.append("WROTE:yes")
except OSError as err:
    found.append("WROTE-FAILED:" + type(err).__name__)
try:
    found.append("LISTED:" + ",".join(os.listdir({data!r})))
except OSError as err:
    found.append("LISTED-FAILED:" + type(err).__name__)
raise RuntimeError("PROBE-RAN " + " ".join(found))
"""


def probe_sdist(*, key: Path, written: Path, data: Path) -> bytes:
    """An sdist whose in-tree build backend tries (a)-(c) when pip imports it."""
    files = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "probe_backend"\n'
        'backend-path = ["."]\n',
        "probe_backend.py": _BACKEND.format(key=str(key), written=str(written), data=str(data)),
        "PKG-INFO": "Metadata-Version: 2.1\nName: evilpkg\nVersion: 0.1\n",
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data_bytes = text.encode()
            info = tarfile.TarInfo(f"evilpkg-0.1/{name}")
            info.size = len(data_bytes)
            tar.addfile(info, io.BytesIO(data_bytes))
    return buf.getvalue()


async def test_a_requirements_build_code_reaches_nothing_of_the_host(tmp_path: Path) -> None:
    needs_bubblewrap()
    data = tmp_path / "data"
    data.mkdir()
    secret = "clinai-admin-secret-5be1c0de"
    key = data / "admin.key"
    key.write_text(secret)
    key.chmod(0o644)  # readable by any uid that could see it: only the sandbox stops it
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o777)  # writable by any uid that could see it
    written = outside / "pwned"
    sdist = probe_sdist(key=key, written=written, data=data)

    async def serve(request: web.Request) -> web.StreamResponse:
        return web.Response(body=sdist, content_type="application/gzip")

    package = tmp_path / "pkg"
    shutil.copytree(PACKAGES / "noop", package)
    lines: list[str] = []

    async def log(text: str) -> None:
        lines.append(text)

    runtime = ProcessRuntime(process_config(data / "runtime"))
    try:
        async with http_files(serve) as base:
            (package / "requirements.txt").write_text(f"evilpkg @ {base}/evilpkg-0.1.tar.gz\n")
            with pytest.raises(BuildFailedError) as info:
                await runtime.build(
                    package_dir=package,
                    package_hash="p-probe",
                    requirements_hash="r-probe",
                    log=log,
                )
    finally:
        await runtime.close()
    text = "".join(lines) + info.value.message + info.value.log_tail
    assert "pip install failed" in info.value.message
    assert "PROBE-RAN" in text  # the backend ran (in the sandbox)
    assert secret not in text
    assert "READ-FAILED:FileNotFoundError" in text  # (a) the data folder is not there
    assert not written.exists()  # (b)
    assert "WROTE-FAILED:FileNotFoundError" in text
    assert "LISTED:" not in text  # (c)
    assert "LISTED-FAILED:FileNotFoundError" in text
    assert os.listdir(outside) == []
    envs = data / "runtime" / "envs"
    assert not [p.name for p in envs.iterdir() if p.name.startswith(".")]  # cleaned up


def owners(root: Path) -> set[int]:
    return {p.lstat().st_uid for p in [root, *root.rglob("*")]}


async def test_the_environment_names_where_workers_mount_it(tmp_path: Path) -> None:
    needs_bubblewrap()
    runtime = ProcessRuntime(process_config(tmp_path / "runtime"))

    async def log(text: str) -> None:
        pass

    try:
        artifact = await runtime.build(
            package_dir=PACKAGES / "noop", package_hash="p-env", requirements_hash="r-env", log=log
        )
    finally:
        await runtime.close()
    venv = Path(artifact.details["venv"])
    recorded = (venv / "pyvenv.cfg").read_text() + (venv / "bin" / "activate").read_text()
    assert "/opt/clinai/env" in recorded
    assert str(tmp_path) not in recorded
    if os.geteuid() == 0:  # the build's uid is a worker's later: it owns nothing left
        assert owners(venv) == {0}
