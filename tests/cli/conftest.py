"""The user commands' stack: projector, API, builder and executor as processes on the
process runtime (skipped without bubblewrap), as `clinai up` runs them; the commands
run in process through `main(argv)`, configured by the environment as a user's shell
would be (`CLINAI_API_URL`, `CLINAI_API_KEY`, an empty config folder)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from PIL import Image

from services.cli import main
from tests._infra import needs_bubblewrap
from tests.api._client import new_user
from tests.api.conftest import Stack, running_stack
from tests.api.conftest import stack_env as stack_env  # the module's NATS and Postgres


class Ran(msgspec.Struct):
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def cli_stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    needs_bubblewrap()
    env = {**stack_env, "CLINAI_RUNTIME": "process"}
    with running_stack(env, ["projector", "api", "builder", "executor"]) as running:
        yield running


@pytest.fixture
def user_env(cli_stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A new user's shell: the API and their key in the environment, no config file."""
    client = asyncio.run(new_user(cli_stack.url, cli_stack.admin_key, "cli"))
    env = {"CLINAI_API_URL": cli_stack.url, "CLINAI_API_KEY": str(client.key)}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def clinai(capsys: pytest.CaptureFixture[str]) -> Clinai:
    return Clinai(capsys)


class Clinai:
    """`clinai ARGS` in process: its exit code and what it wrote."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *argv: str | Path) -> Ran:
        self._capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = self._capsys.readouterr()
        return Ran(code=code, out=captured.out, err=captured.err)


def png(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path
