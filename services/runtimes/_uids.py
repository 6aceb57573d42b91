"""The sandbox uids one process runtime holds on this host, claimed with file locks.

Running as root, each worker drops to its own unprivileged uid, whose RLIMIT_NPROC is
what stops a fork bomb. The kernel counts that limit per uid across the whole host, so
two runtimes (two executors, or an executor and a builder) must never hand out the same
uid: one's fork bomb would starve the other's workers. A range is made of blocks of
`BLOCK` uids; each block is held with `flock` on `<lock_dir>/sandbox-uids-<first>.lock`
for the runtime's life. The kernel drops the locks when the holder exits, however it
exits, so a crashed runtime's range is free again at once.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from services.runtimes.base import RuntimeUnavailableError

__all__ = ["BLOCK", "LAST_UID", "UidRange", "claim_uid_range"]

BLOCK = 8  # uids per lock file; range starts are multiples of it
LAST_UID = 65519  # stay clear of 65534 (nobody) and 65535 ((uid_t) -1 in 16 bits)


class UidRange:
    """`uids` held until `release()` (idempotent)."""

    def __init__(self, uids: range, fds: list[int]) -> None:
        self.uids = uids
        self._fds = fds

    def release(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)  # closing the only descriptor drops its flock


def _lock_block(lock_dir: Path, first: int) -> int | None:
    """A descriptor holding block `first`'s lock, or None when another holds it."""
    fd = os.open(lock_dir / f"sandbox-uids-{first}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def claim_uid_range(*, first: int, count: int, lock_dir: Path) -> UidRange:
    """The lowest free range of `count` uids from `first` on (`first` a multiple of
    BLOCK). Raises RuntimeUnavailableError when none is free up to LAST_UID."""
    if first % BLOCK or first <= 0:
        raise ValueError(f"the first sandbox uid must be a positive multiple of {BLOCK}: {first}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    blocks = -(-count // BLOCK)
    try:
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise RuntimeUnavailableError(
            f"cannot make {lock_dir}, where runtimes claim sandbox uids: {err}",
            hint="make it writable, or set the process runtime's uid_lock_dir",
        ) from err
    start = first
    while start + blocks * BLOCK - 1 <= LAST_UID:
        fds: list[int] = []
        try:
            for index in range(blocks):
                fd = _lock_block(lock_dir, start + index * BLOCK)
                if fd is None:
                    break
                fds.append(fd)
        except BaseException:
            UidRange(range(0), fds).release()
            raise
        if len(fds) == blocks:
            return UidRange(range(start, start + count), fds)
        UidRange(range(0), fds).release()
        start += (len(fds) + 1) * BLOCK  # past the block someone else holds
    raise RuntimeUnavailableError(
        f"no {count} free sandbox uids between {first} and {LAST_UID}: other ClinAI runtimes "
        f"on this host hold them (locks in {lock_dir})",
        hint="stop one of them, lower CLINAI_WORKERS_TOTAL, or start this one from another "
        "sandbox_uid_base",
    )
