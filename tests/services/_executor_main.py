"""An executor in its own process, for the redelivery tests (killed with SIGKILL):
`python -m tests.services._executor_main [--default-consumer]`, configured by CLINAI_*
variables; the test consumer's short timers unless `--default-consumer`."""

from __future__ import annotations

import asyncio
import logging
import sys

from services.executor import run_executor
from services.settings import Settings
from services.subscribers import ConsumerOptions
from tests.services._support import FAST_CONSUMER


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    default = "--default-consumer" in sys.argv[1:]
    consumer = ConsumerOptions() if default else FAST_CONSUMER
    asyncio.run(run_executor(Settings.from_env(), consumer=consumer))


if __name__ == "__main__":
    main()
