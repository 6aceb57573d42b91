"""Runs each service as a child process (`clinai serve <name>`), restarts one that dies
with a backoff, and stops them all on request: SIGTERM, then SIGKILL past a deadline.
`retry_now()` ends the backoffs (a dependency they waited for is back)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence

__all__ = ["Supervisor"]

log = logging.getLogger("clinai.supervisor")

_MAX_BACKOFF_S = 10.0
_STABLE_AFTER_S = 30.0


class Supervisor:
    def __init__(
        self,
        services: Sequence[str],
        env: Mapping[str, str],
        *,
        stop_timeout: float = 10.0,
        env_for: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """`env_for[name]` adds to `env` for that service (its own metrics port, say)."""
        self._services = list(services)
        self._env = dict(env)
        self._env_for = {name: dict(extra) for name, extra in (env_for or {}).items()}
        self._stop_timeout = stop_timeout
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._retry = asyncio.Event()

    async def run(self) -> None:
        """Start every service and keep it running until `stop()`."""
        watchers = [asyncio.create_task(self._keep(name)) for name in self._services]
        try:
            await self._stopping.wait()
        finally:
            await self._terminate_all()
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    def stop(self) -> None:
        self._stopping.set()

    def retry_now(self) -> None:
        """Restart the services waiting out a backoff now, with the backoff reset."""
        self._retry.set()
        self._retry = asyncio.Event()

    async def _keep(self, name: str) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.cli",
                "serve",
                name,
                env={**self._env, **self._env_for.get(name, {})},
                start_new_session=True,  # Ctrl-C reaches the supervisor, which stops us in order
            )
            self._procs[name] = proc
            code = await proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > _STABLE_AFTER_S:
                backoff = 0.5
            log.error("service %s exited with %s; restarting in %.1fs", name, code, backoff)
            if await self._wait_backoff(backoff):
                backoff = 0.5
            else:
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _wait_backoff(self, seconds: float) -> bool:
        """Wait `seconds`, or less on stop or `retry_now()`; True after `retry_now()`."""
        retry = asyncio.ensure_future(self._retry.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait(
                {retry, stopping}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
            return retry.done()
        finally:
            retry.cancel()
            stopping.cancel()

    async def _terminate_all(self) -> None:
        running = [p for p in self._procs.values() if p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(self._stop_timeout):
                await asyncio.gather(*(p.wait() for p in running))
        except TimeoutError:
            for proc in running:
                if proc.returncode is None:
                    log.warning("service pid %s did not stop in time; killing it", proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.gather(*(p.wait() for p in running))
