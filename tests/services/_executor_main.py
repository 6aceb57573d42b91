"""An executor in its own process, for the redelivery test (killed with SIGKILL):
`python -m tests.services._executor_main`, configured by CLINAI_* variables."""

from __future__ import annotations

import asyncio

from services.executor import run_executor
from services.settings import Settings
from tests.services._support import FAST_CONSUMER


def main() -> None:
    asyncio.run(run_executor(Settings.from_env(), consumer=FAST_CONSUMER))


if __name__ == "__main__":
    main()
