"""Shared plumbing for the embedded servers: errors, ports, child processes.

Everything here is blocking; the public classes call it from a worker thread
(`asyncio.to_thread`) so it works the same from async code and from a plain
synchronous caller (a pytest session fixture, a signal handler).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from events import ClinaiError

__all__ = [
    "AlreadyRunningError",
    "EmbeddedError",
    "EmbeddedServer",
    "ManagedProcess",
    "StartupError",
    "StartupTimeoutError",
    "choose_port",
    "launch",
    "pid_cmdline",
    "port_is_free",
    "remember_port",
    "start_in_thread",
    "tail",
]

_POLL_S = 0.005  # readiness poll interval; grows up to _POLL_MAX_S
_POLL_MAX_S = 0.05


class EmbeddedError(ClinaiError):
    """Base of the embedded-server errors. `hint` says what to do next (and is part of
    the error's text: these reach an operator's terminal as they are)."""

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class AlreadyRunningError(EmbeddedError):
    """A server already runs on this data directory (this object or another process)."""

    def __init__(self, what: str, data_dir: Path, *, pid: int | None) -> None:
        who = f"process {pid}" if pid is not None else "this object"
        super().__init__(
            f"{what} is already running on {data_dir} ({who})",
            hint="stop it first, or use another data directory",
        )
        self.data_dir = data_dir
        self.pid = pid


class StartupError(EmbeddedError):
    """The server process exited during startup. `log_tail` holds its last output lines."""

    def __init__(self, message: str, *, log_tail: str = "", hint: str = "") -> None:
        super().__init__(f"{message}\n{log_tail}" if log_tail else message, hint=hint)
        self.log_tail = log_tail


class StartupTimeoutError(StartupError):
    """The server did not become ready before the deadline (it has been killed)."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR like the servers
    themselves, so connections of a previous run in TIME_WAIT do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def choose_port(port_file: Path | None, host: str = "127.0.0.1") -> int:
    """The port remembered in `port_file` if it is still free, otherwise a free one."""
    if port_file is not None:
        with contextlib.suppress(OSError, ValueError):
            remembered = int(port_file.read_text().strip())
            if 0 < remembered < 65536 and port_is_free(remembered, host):
                return remembered
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def remember_port(port_file: Path, port: int) -> None:
    tmp = port_file.with_name(port_file.name + ".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(port_file)


def pid_cmdline(pid: int) -> list[str] | None:
    """The command line of a live process, [] if alive but unreadable, None if gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by someone else
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """A child process in its own session (process group), logging to a file.

    `stop` signals the process, waits up to a deadline, then SIGKILLs the whole
    group while the leader is still unreaped (so the group id cannot have been
    reused). It never leaves a zombie or an unwaited Popen behind.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        cwd: Path,
        env: dict[str, str] | None = None,
        user: int | None = None,
        group: int | None = None,
    ) -> None:
        self._argv = list(argv)
        self._log_path = log_path
        self._cwd = cwd
        self._env = env
        self._user = user
        self._group = group
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def log_path(self) -> Path:
        return self._log_path

    def spawn(self) -> None:
        if self._popen is not None:
            raise EmbeddedError(f"{self._argv[0]} was already spawned")
        with open(self._log_path, "ab") as log:
            self._popen = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._cwd,
                env=self._env,
                start_new_session=True,
                close_fds=True,
                user=self._user,
                group=self._group,
                extra_groups=[] if self._user is not None else None,
            )

    def exited(self) -> int | None:
        """The exit status if the process has ended (and has been reaped), else None."""
        if self._popen is None:
            return None
        return self._popen.poll()

    async def wait_exit(self) -> None:
        """Until the process ends, without reaping it (a pidfd becomes readable): its
        group id cannot be reused until `reap()`, so the group can still be killed."""
        popen = self._popen
        if popen is None or popen.returncode is not None:
            return
        try:
            fd = os.pidfd_open(popen.pid)
        except ProcessLookupError:
            return
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not ended.done():
                ended.set_result(None)

        loop.add_reader(fd, on_exit)
        try:
            await ended
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    def reap(self) -> int | None:
        """After the leader ended by itself: SIGKILL what is left of its group (a
        killed postmaster's backends hold its shared memory), then reap the leader.
        Returns the leader's exit status; idempotent."""
        popen, self._popen = self._popen, None
        if popen is None:
            return None
        if popen.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
        return popen.wait()

    def wait_ready(
        self, probe: Callable[[], bool], *, timeout: float, what: str, hint: str = ""
    ) -> None:
        """Poll `probe` until it returns True; kill the process on exit or deadline."""
        deadline = time.monotonic() + timeout
        interval = _POLL_S
        while True:
            code = self.exited()
            if code is not None:
                self._popen = None
                raise StartupError(
                    f"{what} exited with status {code} during startup; see {self._log_path}",
                    log_tail=tail(self._log_path),
                    hint=hint,
                )
            if probe():
                return
            if time.monotonic() >= deadline:
                self.stop(signal.SIGKILL, timeout=5.0)
                raise StartupTimeoutError(
                    f"{what} was not ready after {timeout:.1f}s; see {self._log_path}",
                    log_tail=tail(self._log_path),
                    hint=hint,
                )
            time.sleep(interval)
            interval = min(interval * 2, _POLL_MAX_S)

    def stop(self, sig: signal.Signals, *, timeout: float) -> int | None:
        """Send `sig`, wait up to `timeout`, then SIGKILL the process group. Idempotent."""
        popen = self._popen
        if popen is None:
            return None
        try:
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    popen.send_signal(sig)
                try:
                    return popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
            else:
                return popen.returncode
            # Still running: kill the whole group while the leader is unreaped.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            return popen.wait(timeout=max(timeout, 5.0))
        finally:
            if popen.poll() is not None:
                self._popen = None


def launch(
    build: Callable[[int], ManagedProcess],
    ready: Callable[[ManagedProcess, int], bool],
    *,
    port: int | None,
    port_file: Path,
    timeout: float,
    what: str,
) -> tuple[ManagedProcess, int]:
    """Spawn `build(port)` and wait until `ready`; return the process and its port.

    With `port=None` the port remembered in `port_file` is preferred, and if the
    server dies because another process took the port meanwhile, up to two more
    free ports are tried. The chosen port is remembered on success.
    """
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        chosen = port if port is not None else choose_port(port_file if attempt == 0 else None)
        process = build(chosen)
        process.spawn()
        try:
            process.wait_ready(
                functools.partial(ready, process, chosen),
                timeout=timeout,
                what=what,
                hint=f"is port {chosen} taken? see the log",
            )
        except StartupTimeoutError:
            raise
        except StartupError:
            if attempt + 1 < attempts and not port_is_free(chosen):
                continue
            raise
        except BaseException:
            process.stop(signal.SIGKILL, timeout=5.0)
            raise
        remember_port(port_file, chosen)
        return process, chosen
    raise EmbeddedError(f"{what} could not be started")  # not reached: the loop returns or raises


async def start_in_thread(start: Callable[[], str], stop: Callable[[], None]) -> str:
    """Run a blocking `start` in a thread. If the caller is cancelled meanwhile, let
    the start finish, then stop what it started, so no process is left behind."""
    future = asyncio.ensure_future(asyncio.to_thread(start))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future
        await asyncio.to_thread(stop)
        raise


class EmbeddedServer:
    """The async face of a server run by `start_blocking`/`stop_blocking`, which each
    embedded server defines: `start()` runs it in a thread and stops whatever it
    started if cancelled; `stop()` finishes even if cancelled; `async with` does both."""

    def __init__(
        self, data_dir: Path, port: int | None, *, startup_timeout: float, stop_timeout: float
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        if startup_timeout <= 0 or stop_timeout <= 0:
            raise ValueError("startup_timeout and stop_timeout must be positive")
        self.data_dir = Path(data_dir)
        self.port = port
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._process: ManagedProcess | None = None
        self._last_port: int | None = None  # where it listened last: a restart keeps it
        self._lock = threading.Lock()

    def start_blocking(self, port: int | None = None) -> str:
        """Start the server (on `port`, else `self.port`, else a remembered or free one)
        and return its client URL once it answers."""
        raise NotImplementedError

    def stop_blocking(self) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> str:
        return await start_in_thread(self.start_blocking, self.stop_blocking)

    async def wait_exit(self) -> int | None:
        """Until the running server ends by itself (crashed, killed): returns its exit
        status once what is left of its process group is killed and reaped, so that
        `restart()` can follow. None if nothing runs or `stop()` ended it."""
        process = self._process
        if process is None:
            return None
        await process.wait_exit()

        def take() -> int | None:
            with self._lock:
                if self._process is not process:
                    return None  # stop() (or a restart) took it meanwhile
                self._process = None
                return process.reap()

        return await asyncio.shield(asyncio.to_thread(take))

    async def restart(self) -> str:
        """Start again on the port of the last start, so that clients keep their URL."""
        start = functools.partial(self.start_blocking, self._last_port)
        return await start_in_thread(start, self.stop_blocking)

    async def stop(self) -> None:
        await asyncio.shield(asyncio.to_thread(self.stop_blocking))

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
