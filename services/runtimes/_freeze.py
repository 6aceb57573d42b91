"""Stopping every process below a process with signals (no cgroup needed), and letting
them go on afterwards: the process runtime freezes a worker's sandbox while it reads
and empties out/, so that nothing the model left running can change it meanwhile.

SIGSTOP stops every thread of a process, but only once each thread next reaches user
space, and a process forked before its parent stopped is not stopped with it. So
`freeze` signals every process it finds, waits until every thread of each is stopped,
and lists the processes again, until a listing made once all were stopped finds no
new one: then nothing below can fork any more. Processes are held by pidfd, so a pid
reused meanwhile is never signalled. Everything a sandbox starts stays below it: its
pid namespace makes its pid 1 (a child of bwrap) the reaper of its orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import time

__all__ = ["Frozen", "descendants", "freeze"]

_POLL_S = 0.0005
_STOPPED_STATES = frozenset(b"tTZX")  # stopped, traced, zombie, dead


def descendants(pid: int) -> list[int]:
    """The processes below `pid`, as /proc lists them ([] where it cannot)."""
    found: list[int] = []
    parents = [pid]
    while parents:
        parent = parents.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:  # a child is listed under the thread that forked it
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = [int(child) for child in f.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(children)
            parents.extend(children)
    return found


class Frozen:
    """Processes stopped by `freeze`; `thaw` lets them go on (once)."""

    def __init__(self) -> None:
        self._pidfds: dict[int, int] = {}

    @property
    def pids(self) -> list[int]:
        return sorted(self._pidfds)

    def _stop(self, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return  # already gone
        self._pidfds[pid] = fd
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGSTOP)

    async def _stop_all(self, root: int, deadline: float) -> bool:
        confirmed = False  # every process stopped so far is known to be stopped
        while True:
            self._forget_exited()
            new = [pid for pid in descendants(root) if pid not in self._pidfds]
            if not new and confirmed:
                return True
            for pid in new:
                self._stop(pid)
            while not self._all_stopped():
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(_POLL_S)
            confirmed = True

    def _all_stopped(self) -> bool:
        self._forget_exited()
        return all(_is_stopped(pid) for pid in self._pidfds)

    def _forget_exited(self) -> None:
        """Drop the processes that have exited and whose pid already names another,
        live process (pids wrap quickly under a fork storm): that one must be stopped
        anew, not judged by the old one's state. A zombie keeps its pid: it stays."""
        for pid, fd in list(self._pidfds.items()):
            if _exited(fd) and _state(pid) not in (None, ord("Z"), ord("X")):
                os.close(fd)
                del self._pidfds[pid]

    def thaw(self) -> None:
        """SIGCONT every process stopped; idempotent."""
        pidfds, self._pidfds = self._pidfds, {}
        for fd in pidfds.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGCONT)
            os.close(fd)


def _exited(pidfd: int) -> bool:
    """Whether the process behind `pidfd` has exited (a pidfd polls readable then)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _state(pid: int) -> int | None:
    """The state letter of process `pid` (its main thread), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    end = stat.rfind(b")")  # "pid (comm) S ...": comm may hold anything
    return stat[end + 2] if 0 <= end and end + 2 < len(stat) else None


def _is_stopped(pid: int) -> bool:
    """Whether every thread of `pid` is stopped (or it has exited)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return True
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat", "rb") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue  # that thread has ended
        # "pid (comm) S ...": comm may hold anything, the state follows its last ')'
        end = stat.rfind(b")")
        if end < 0 or end + 2 >= len(stat) or stat[end + 2] not in _STOPPED_STATES:
            return False
    return True


async def freeze(root: int, timeout_s: float) -> Frozen | None:
    """Stop every process below `root` (not `root` itself) and wait until all their
    threads are stopped; None (after letting them go on) when that takes longer than
    `timeout_s` (e.g. a thread that stays in an uninterruptible wait) or fails."""
    frozen = Frozen()
    try:
        if await frozen._stop_all(root, time.monotonic() + timeout_s):
            return frozen
    except OSError:  # no pidfds (a kernel before 5.3), out of file descriptors...
        pass
    except BaseException:
        frozen.thaw()
        raise
    frozen.thaw()
    return None
