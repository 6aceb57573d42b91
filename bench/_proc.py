"""CPU time of a process tree from /proc (Linux), grouped by what each process is."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

__all__ = ["cpu_by_kind", "cpu_seconds", "descendants", "kind_of_port", "wait_listening"]

_TICK = os.sysconf("SC_CLK_TCK")
# (what a command line contains, the name it is counted under), first match wins
_KINDS = (
    ("serve api", "api"),
    ("serve executor", "executor"),
    ("serve notifier", "notifier"),
    ("serve projector", "projector"),
    ("serve builder", "builder"),
    ("nats-server", "nats"),
    ("postgres", "postgres"),
    ("-m runner", "model workers"),
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def descendants(root: int) -> list[int]:
    """`root` and every process below it, now."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):
                continue
    found = [root]
    for pid in found:
        found.extend(child for child, parent in parents.items() if parent == pid)
    return found


def _kind(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "other"
    return next((name for needle, name in _KINDS if needle in command), "other")


def cpu_by_kind(root: int) -> Counter[str]:
    """CPU seconds so far of the tree under `root`, by kind of process. Subtract two
    readings for the CPU spent in between (a process started in between counts whole)."""
    totals: Counter[str] = Counter()
    for pid in descendants(root):
        totals[_kind(pid)] += cpu_seconds(pid)
    return totals


def kind_of_port(root: int, port: int) -> str:
    """The kind of the process under `root` whose TCP socket on 127.0.0.1 has the local
    `port` ("other" when none has it)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return _kind(pid)
    return "other"


def wait_listening(
    proc: subprocess.Popen[bytes], port: int, what: str, timeout_s: float = 30
) -> None:
    """Return once 127.0.0.1:`port` accepts connections; exit naming `what` if `proc`
    ends or does not listen within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.05)  # polling interval while the server starts
