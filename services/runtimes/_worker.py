"""One sandboxed worker process of the process runtime."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

from services.runtimes._framing import WorkerChannel
from services.runtimes._freeze import Frozen, descendants, freeze
from services.runtimes._jobdir import JobFiles, remove_tree

__all__ = ["FREEZE_TIMEOUT_S", "ProcessWorker", "describe_exit", "oom_kills"]

# How long stopping a sandbox may take: a thread finishes its system call first (a
# large write, say) before it stops.
FREEZE_TIMEOUT_S = 2.0


def describe_exit(code: int | None, *, sandboxed: bool) -> tuple[str, int | None]:
    """A readable exit status and the signal that ended the worker, if any.
    bwrap reports a child killed by signal N as exit code 128 + N."""
    if code is None:
        return "still running", None
    signo: int | None = None
    if code < 0:
        signo = -code
    elif sandboxed and code > 128:
        signo = code - 128
    if signo is not None:
        try:
            name = signal.Signals(signo).name
        except ValueError:
            name = f"signal {signo}"
        return f"killed by {name}", signo
    return f"exit code {code}", None


def oom_kills() -> int | None:
    """How many processes the kernel's out-of-memory killer has ended since boot (the
    `oom_kill` line of /proc/vmstat, Linux 4.13+); None when it cannot be told."""
    try:
        with open("/proc/vmstat", "rb") as f:
            for line in f:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class ProcessWorker:
    def __init__(
        self,
        *,
        proc: asyncio.subprocess.Process,
        channel: WorkerChannel,
        directory: Path,
        files: JobFiles,
        uid: int | None,
        sandboxed: bool,
        on_cleanup: Callable[[], None] | None = None,
    ) -> None:
        self.proc = proc
        self.channel = channel
        self.directory = directory  # host path, bound at `files.inside` inside
        self.files = files
        self.uid = uid
        self.sandboxed = sandboxed
        self.setup_s = 0.0
        self.killed_by_host = False
        self._oom_kills_at_start = oom_kills()  # read once per worker, not per job
        self._cleaned = False
        self._on_cleanup = on_cleanup

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def oom_killer_ran(self) -> bool:
        """Whether the out-of-memory killer has ended a process since this worker
        started (True when that cannot be told): a SIGKILL the host did not send is
        the model's own (`os.kill(0, SIGKILL)`) when it has not."""
        now = oom_kills()
        return now is None or self._oom_kills_at_start is None or now > self._oom_kills_at_start

    async def exit_status(self, timeout_s: float = 2.0) -> tuple[str, int | None]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        return describe_exit(self.proc.returncode, sandboxed=self.sandboxed)

    async def stderr_tail(self, limit: int = 8192) -> str:
        if self.proc.stderr is None:
            return ""
        try:
            data = await asyncio.wait_for(self.proc.stderr.read(limit), 1.0)
        except (TimeoutError, ValueError):
            return ""
        return data.decode(errors="replace")

    async def freeze(self, timeout_s: float = FREEZE_TIMEOUT_S) -> Frozen | None:
        """Stop every process of the sandbox (every thread of each) until the returned
        `Frozen` is thawed; None when they could not all be stopped (see `_freeze`)."""
        if self.proc.returncode is not None:
            return None
        return await freeze(self.proc.pid, timeout_s)

    async def kill(self) -> None:
        """Kill the worker (its whole sandbox) and remove its directory. Idempotent."""
        await self.stop()
        if not self._cleaned:
            self._cleaned = True
            # Its processes are dead: its uid is free even while its files are removed.
            if self._on_cleanup is not None:
                self._on_cleanup()
            await remove_tree(self.directory)

    async def stop(self) -> None:
        """Kill the worker (its whole sandbox) and wait for its end, but keep its
        directory (a job's outputs are still harvested from it); `kill` removes it."""
        if self.proc.returncode is None:
            self.killed_by_host = True
            # Each process of the sandbox gets its own SIGKILL first: those in the
            # sandbox's session (the model's) would otherwise die only once its pid 1
            # has, a moment after the worker's end is reported to us.
            for pid in descendants(self.proc.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
