"""Stopping a tree of processes with signals: nothing below escapes, not even what is
forked while it is being stopped, and everything goes on once thawed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from services.runtimes._freeze import descendants, freeze
from tests._infra import wait_until

# Like a sandbox's pid 1, the root reaps its orphans (it is their subreaper). Below it,
# two processes "hop": each forks a child that goes on while the parent exits, as fast
# as it can, so a process listed a moment ago is gone and its child not yet stopped.
_HOPPING = """
import ctypes, os
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
for _ in range(2):
    if os.fork() == 0:
        while True:
            if os.fork() != 0:
                os._exit(0)
print("ready", flush=True)
while True:
    os.wait()
"""


def _states(pid: int) -> list[str]:
    """The state letter of every thread of `pid` ([] once it is gone)."""
    states: list[str] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/stat", "rb") as f:
                stat = f.read()
            states.append(chr(stat[stat.rfind(b")") + 2]))
    except FileNotFoundError:
        return []
    return states


def _all_stopped(root: int) -> bool:
    return all(state in "tTZX" for pid in descendants(root) for state in _states(pid))


@pytest.fixture
def hopping() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOPPING], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        # Killed below first, until none is left (they fork meanwhile), so that the root,
        # their subreaper, reaps them all: killed first, it would leave them to pid 1,
        # which on some hosts never reaps them (zombies that use up the pids).
        deadline = time.monotonic() + 10
        while (below := descendants(proc.pid)) and time.monotonic() < deadline:
            for pid in below:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)  # polling interval while the root reaps them
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_every_process_below_stops_even_those_forked_meanwhile(
    hopping: subprocess.Popen[str],
) -> None:
    for _ in range(10):  # each round races the children's forks anew
        # A deadline for a loaded machine: the fork storm competes with the freeze for
        # the CPU (with 5 s it ran out once in CI, the whole suite running beside it).
        frozen = await freeze(hopping.pid, timeout_s=30.0)
        assert frozen is not None
        below = descendants(hopping.pid)
        assert len(below) >= 2 and set(below) <= set(frozen.pids)
        assert _all_stopped(hopping.pid), {pid: _states(pid) for pid in below}
        assert _states(hopping.pid) != [] and "T" not in _states(hopping.pid)  # not the root
        frozen.thaw()
        await wait_until(
            lambda: not _all_stopped(hopping.pid), what="the processes to go on", timeout_s=5
        )
