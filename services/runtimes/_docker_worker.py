"""One warm worker = one locked-down container running `python -m runner`, spoken to
with the host-side framing client (`_framing`) over two FIFOs in the worker directory
(images of runner revision 2 on), or over its attached stdin/stdout (older images).

The FIFOs are plain kernel pipes between the executor and the runner; the attach stream
goes through the engine and its shim both ways, which cost about 1 ms per job here.

The container is attached either way: its end is the end of the attach stream. That
stream is not a TTY, so the engine multiplexes stdout and stderr with 8-byte headers;
aiodocker's `Stream` demultiplexes them. Without FIFOs stdout (the protocol) is fed into
an `asyncio.StreamReader` for `WorkerChannel`; stderr (only what the runner prints
before it redirects its fds, e.g. an interpreter crash) is kept as a bounded tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiodocker import Docker, DockerError
from aiodocker.containers import DockerContainer
from aiodocker.stream import Stream

from events import ClinaiError
from services.runtimes._docker_build import JOB_DIR, MODEL_DIR, RUNNER_ARGV, WORKER_LOG
from services.runtimes._docker_jobs import (
    REQUESTS_FIFO,
    RESPONSES_FIFO,
    ChannelEnds,
    make_channel_fifos,
    make_worker_dir,
)
from services.runtimes._framing import ProtocolError, Ready, WorkerChannel
from services.runtimes._jobdir import JobFiles, read_tail, remove_tree
from services.runtimes._outcomes import WorkerDeath
from services.runtimes._worker import describe_exit

__all__ = ["ContainerLimits", "ContainerWorker", "WorkerStartError", "container_death"]

_STDERR_TAIL = 16 * 1024
LABEL_WORKER = "ai.clinai.worker"


class ContainerLimits:
    """The sandbox of every worker container."""

    def __init__(
        self,
        *,
        memory_mb: int,
        cpus: float,
        pids_limit: int,
        tmpfs_mb: int,
        user: str,
        seccomp_profile: str,
    ) -> None:
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.pids_limit = pids_limit
        self.tmpfs_mb = tmpfs_mb
        self.user = user
        self.seccomp_profile = seccomp_profile  # JSON, `_seccomp.docker_profile()`
        # chown the model's writable files to its uid when we can (root); else 0o666/0o777
        self.host_uid = int(user.split(":")[0]) if os.geteuid() == 0 else None

    def container_config(
        self, image: str, worker_dir: Path, labels: dict[str, str]
    ) -> dict[str, Any]:
        memory = self.memory_mb * 1024 * 1024
        return {
            "Image": image,
            "User": self.user,
            "AttachStdin": True,
            "AttachStdout": True,
            "AttachStderr": True,
            "OpenStdin": True,
            "StdinOnce": False,
            "Tty": False,
            "NetworkDisabled": True,
            "Labels": {LABEL_WORKER: "1", **labels},
            "HostConfig": {
                "NetworkMode": "none",
                "Memory": memory,
                "MemorySwap": memory,  # no swap: over the limit is an OOM kill
                "NanoCpus": int(self.cpus * 1e9),
                "PidsLimit": self.pids_limit,
                "ReadonlyRootfs": True,
                "Tmpfs": {"/tmp": f"rw,nosuid,nodev,size={self.tmpfs_mb}m"},
                "Binds": [f"{worker_dir}:{JOB_DIR}:rw"],
                "CapDrop": ["ALL"],
                # Docker's default profile allows io_uring (before 25.0) and ptrace: ours
                # is at least as strict otherwise, and the same as the process runtime's.
                "SecurityOpt": ["no-new-privileges", f"seccomp={self.seccomp_profile}"],
                "IpcMode": "private",
                "LogConfig": {"Type": "none", "Config": {}},
                "AutoRemove": False,  # inspected after death (OOMKilled, exit code)
            },
        }


class WorkerStartError(ClinaiError):
    """The worker did not become ready. `ready` is its failure frame when it sent one
    (import or setup failed); else `timed_out`, or `state` is the dead container's State
    ({} when the engine cannot tell). `log` is what the model printed meanwhile."""

    def __init__(
        self,
        message: str,
        *,
        ready: Ready | None = None,
        state: dict[str, Any] | None = None,
        stderr: str = "",
        log: str = "",
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.ready = ready
        self.state = state or {}
        self.stderr = stderr
        self.log = log
        self.timed_out = timed_out


def container_death(state: dict[str, Any], stderr: str) -> WorkerDeath:
    """How a worker container died, from its State ({} when the engine could not tell:
    then it is the infrastructure's fault)."""
    code = state.get("ExitCode")
    if state.get("OOMKilled"):
        return WorkerDeath(status="killed by SIGKILL", oom_killed=True, stderr=stderr)
    if not state or state.get("Running") or not isinstance(code, int):
        return WorkerDeath(status=None, stderr=stderr)
    status, signo = describe_exit(code, sandboxed=True)
    # The runner is PID 1 of the container: nothing inside can SIGKILL it, only the
    # kernel's OOM killer (above) or someone outside (docker kill, an engine restart).
    outside = signo == signal.SIGKILL
    return WorkerDeath(status=status, signo=signo, killed_outside=outside, stderr=stderr)


class _StdinWriter:
    """`write`/`drain` over the attach stream's stdin, as `WorkerChannel` expects."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self._buf += data

    async def drain(self) -> None:
        data, self._buf = bytes(self._buf), bytearray()
        try:
            await self._stream.write_in(data)
        except (RuntimeError, AssertionError, AttributeError, OSError) as err:
            # aiodocker: "Cannot write to closed transport", or asserts on a connection
            # that is already gone (the container died)
            raise ConnectionError(f"the container's stdin is closed: {err!r}") from err


class ContainerWorker:
    """A started container with its channel. Create with `start`."""

    def __init__(
        self, docker: Docker, container: DockerContainer, stream: Stream, files: JobFiles
    ) -> None:
        self._docker = docker
        self.container = container
        self._stream = stream
        self.files = files
        self.dir = files.root
        self.reader = asyncio.StreamReader(limit=2**20)
        self.channel = WorkerChannel(self.reader, _StdinWriter(stream))
        self._fifo_in: asyncio.ReadTransport | None = None
        self._fifo_out: asyncio.WriteTransport | None = None
        self._keepers: tuple[int, ...] = ()
        self._stderr = bytearray()
        self._alive = True
        self._killed = False
        self._pump_task: asyncio.Task[None] | None = None
        self.ready_frame: Ready | None = None

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def stderr_tail(self) -> str:
        return self._stderr.decode(errors="replace")

    @classmethod
    async def start(
        cls,
        docker: Docker,
        *,
        image: str,
        limits: ContainerLimits,
        work_root: Path,
        labels: dict[str, str],
        ready_timeout_s: float,
        log_limit: int,
        check: bool = False,
        fifos: bool = False,
    ) -> ContainerWorker:
        """Create, attach, start; wait for the runner's ready frame. With `check` the
        runner only imports predict.py and exits (a build's smoke test); with `fifos`
        the protocol runs over FIFOs (the image's runner must support `--channel`).
        Raises WorkerStartError (model or container failure) or DockerError (engine)."""
        name = f"clinai-w-{uuid.uuid4().hex[:12]}"
        files = await asyncio.to_thread(make_worker_dir, work_root / name, limits.host_uid)
        worker_dir = files.root
        config = limits.container_config(image, worker_dir, labels)
        if check:
            config["Entrypoint"] = [*RUNNER_ARGV[:3], "--check", *RUNNER_ARGV[3:], MODEL_DIR]
        elif fifos:
            config["Cmd"] = [
                "--channel",
                f"{JOB_DIR}/{REQUESTS_FIFO}",
                f"{JOB_DIR}/{RESPONSES_FIFO}",
            ]
        ends: ChannelEnds | None = None
        try:
            if fifos:
                ends = await asyncio.to_thread(make_channel_fifos, worker_dir)
            container = await docker.containers.create(config, name=name)
        except BaseException:
            for fd in (*ends[:2], *ends.keepers) if ends is not None else ():
                os.close(fd)
            await asyncio.to_thread(shutil.rmtree, worker_dir, True)
            raise
        stream = container.attach(stdin=True, stdout=True, stderr=True)
        worker = cls(docker, container, stream, files)
        try:
            if ends is not None:
                await worker._open_fifos(ends)
            await stream.__aenter__()  # attach before start: no output is missed
            worker._pump_task = asyncio.create_task(worker._pump(), name=f"{name}-pump")
            await container.start()
            try:
                async with asyncio.timeout(ready_timeout_s):
                    ready = await worker.channel.ready()
            except TimeoutError as err:
                raise WorkerStartError(
                    f"the worker did not start within {ready_timeout_s:g} s (import + setup())",
                    timed_out=True,
                    log=await worker.read_log(log_limit),
                ) from err
            except ProtocolError as err:  # stream ended: the container died while starting
                state = await worker.exit_state()
                raise WorkerStartError(
                    f"the worker exited while starting ({err})",
                    state=state,
                    stderr=worker.stderr_tail,
                    log=await worker.read_log(log_limit),
                ) from err
            if not ready.ok:
                raise WorkerStartError(
                    ready.message or "the worker failed to start",
                    ready=ready,
                    log=await worker.read_log(log_limit),
                )
            worker.ready_frame = ready
            return worker
        except BaseException:
            await worker.kill()
            raise

    async def _open_fifos(self, ends: ChannelEnds) -> None:
        """Make the channel speak over the FIFOs (their fds are owned from here on:
        closed with the worker)."""
        self._keepers = ends.keepers
        loop = asyncio.get_running_loop()
        responses = os.fdopen(ends.responses, "rb", buffering=0)
        requests = os.fdopen(ends.requests, "wb", buffering=0)
        try:
            self._fifo_in, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(self.reader), responses
            )
        except BaseException:
            responses.close()
            requests.close()
            raise
        try:  # from here on `kill` closes the read end with its transport
            self._fifo_out, protocol = await loop.connect_write_pipe(
                lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), requests
            )
        except BaseException:
            requests.close()
            raise
        writer = asyncio.StreamWriter(self._fifo_out, protocol, None, loop)
        self.channel = WorkerChannel(self.reader, writer)

    async def _pump(self) -> None:
        try:
            while True:
                msg = await self._stream.read_out()
                if msg is None:
                    break
                if msg.stream == 2 or self._fifo_in is not None:
                    self._stderr += msg.data
                    del self._stderr[:-_STDERR_TAIL]
                else:
                    self.reader.feed_data(msg.data)
        except (aiohttp.ClientError, DockerError, OSError):
            pass
        finally:
            self._alive = False
            # The container is gone: the channel reads to its end. The FIFO's reader is
            # ended by closing its transport (no EOF comes through it: see
            # `make_channel_fifos`), never while it may still be fed.
            if self._fifo_in is not None:
                self._fifo_in.close()
            else:
                self.reader.feed_eof()

    async def read_log(self, limit: int) -> str:
        """The tail of what the model printed outside jobs (import, setup())."""
        return await asyncio.to_thread(read_tail, self.dir / Path(WORKER_LOG).name, limit)

    async def exit_state(self, wait_s: float = 5.0) -> dict[str, Any]:
        """The container's State once it has exited (waits up to `wait_s`); {} when the
        engine cannot tell (container gone)."""
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self.container.wait()
            info = await self.container.show()
        except (DockerError, aiohttp.ClientError, OSError):
            return {}
        state = info.get("State")
        return state if isinstance(state, dict) else {}

    async def pause(self) -> bool:
        """Freeze every process of the container (the engine's cgroup freezer) until
        `unpause`; False when the engine could not."""
        try:
            await self.container.pause()
        except (DockerError, aiohttp.ClientError, OSError):
            return False
        return True

    async def unpause(self) -> None:
        """Let a paused container go on; one that cannot is killed (kept for `kill`
        like `terminate`): it must not serve another job frozen."""
        try:
            await self.container.unpause()
        except (DockerError, aiohttp.ClientError, OSError):
            await self.terminate()

    async def kill(self) -> None:
        """SIGKILL the container, remove it and its directory. Idempotent; never raises
        for a container that is already gone. Protected from cancellation."""
        await asyncio.shield(self._kill())
        await asyncio.shield(remove_tree(self.dir))

    async def terminate(self) -> None:
        """Like `kill`, but keep the worker directory (a failed job's outputs and log
        are still collected from it); `kill` removes it later."""
        await asyncio.shield(self._kill())

    async def _kill(self) -> None:
        if self._killed:
            return
        self._killed = True
        self._alive = False
        with contextlib.suppress(DockerError, aiohttp.ClientError, OSError):
            await self.container.delete(force=True)
        with contextlib.suppress(Exception):
            await self._stream.close()
        for transport in (self._fifo_in, self._fifo_out):
            if transport is not None:
                transport.close()
        keepers, self._keepers = self._keepers, ()
        for fd in keepers:
            os.close(fd)
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump_task
            self._pump_task = None
