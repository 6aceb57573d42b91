"""A build step runs a package's code (a setup.py, a .pth file of a requirement) as the
builder: it gets the host environment without ClinAI's settings, which hold the local
stack's NATS token and Postgres password."""

from __future__ import annotations

import sys

import pytest

from services.runtimes._build import run_step
from services.runtimes._pip import PipOptions

_PRINT_SETTINGS = (
    "import os; print(sorted(k for k in os.environ if k.startswith(('CLINAI_', 'KEPT_'))))"
)


async def _ignore(_text: str) -> None:
    return None


async def test_a_build_step_sees_no_clinai_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLINAI_NATS_URL", "nats://the-token@127.0.0.1:4222")
    monkeypatch.setenv("CLINAI_DATABASE_URL", "postgresql://postgres:pw@127.0.0.1:5432/x")
    monkeypatch.setenv("KEPT_FOR_THE_STEP", "1")
    argv = [sys.executable, "-c", _PRINT_SETTINGS]

    for env in (None, PipOptions.env()):
        printed = await run_step("print settings", argv, _ignore, env=env)
        assert printed.strip() == "['KEPT_FOR_THE_STEP']"
