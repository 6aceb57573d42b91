"""Copying a job's outputs out of its worker's folder, safely and within limits.

The model owns `out/` and may still be changing it while the host copies (a thread or
process it left behind; the runtimes stop those first, this module does not rely on
it). So no path under `out/` is ever resolved by name from the top: the walk holds a
file descriptor for every folder it enters and opens each entry relative to it with
`O_NOFOLLOW` (a symlink anywhere fails to open), and it copies only regular files,
read through the descriptor it opened. Swapping a folder for a symlink meanwhile makes
the host skip that entry, never read what it points at.

When the host runs as root, every file of the model is opened with the worker's uid as
the thread's file-system uid (`setfsuid`): the kernel then checks the model's own
permissions, as if the model handed the file over itself.

The walk is bounded: it stops at the first entry over `max_files` (100,000 files cost
no more than 1,001), at the first file over the size limits (apparent size, so a sparse
file counts at its full length) and at the deadline. Blocking: run it in a thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from events import ClinaiError
from services.runtimes.base import FailureKind, OutputCopy, OutputLimits

__all__ = [
    "HarvestError",
    "HarvestTimeoutError",
    "OutputLimitError",
    "collect_outputs",
    "count_outputs",
    "harvest_deadline",
    "harvest_failure_kind",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in after the type check must not hang us on open.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_COPY_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 8 * 1024 * 1024  # bytes copied between two deadline checks
_MIN_HARVEST_S = 1.0  # a job that ends just before its deadline still has this long


class HarvestError(ClinaiError):
    """The outputs cannot be harvested; `message` says why, for the user."""


class OutputLimitError(HarvestError):
    """The job's outputs exceed one of its `OutputLimits`; the message names it."""


class HarvestTimeoutError(HarvestError):
    """Copying the outputs ran past the job's deadline."""


def harvest_failure_kind(err: HarvestError) -> FailureKind:
    return "timeout" if isinstance(err, HarvestTimeoutError) else "output_limit"


def harvest_deadline(started: float, timeout_s: float) -> float:
    """When copying a job's outputs must end (`time.monotonic()`): the job's own
    deadline, counted from when it was started, or a moment from now if later."""
    return max(started + timeout_s, time.monotonic() + _MIN_HARVEST_S)


class _Budget:
    def __init__(self, limits: OutputLimits, deadline: float | None) -> None:
        self.limits = limits
        self.deadline = deadline
        self.entries = 0
        self.total = 0

    def check_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise HarvestTimeoutError(
                "collecting the outputs ran past the job's timeout; write fewer or "
                "smaller outputs, or raise the job's timeout_s"
            )

    def enter(self) -> None:
        """One more entry of out/ (of any kind) was seen."""
        self.check_time()
        self.entries += 1
        if self.entries > self.limits.max_files:
            raise OutputLimitError(
                f"the job left more than {self.limits.max_files} files and folders in its "
                "output folder (limit max_output_files, setting CLINAI_MAX_OUTPUT_FILES)"
            )

    def add(self, name: str, size: int) -> None:
        """`size` more bytes of the output `name` (its apparent size)."""
        if size > self.limits.max_file_bytes:
            raise OutputLimitError(
                f"the output {name!r} is larger than {self.limits.max_file_bytes} bytes "
                "(limit max_output_file_bytes, setting CLINAI_MAX_OUTPUT_FILE_BYTES)"
            )
        if self.total + size > self.limits.max_total_bytes:
            raise OutputLimitError(
                f"the job's outputs add up to more than {self.limits.max_total_bytes} bytes "
                "(limit max_output_bytes, setting CLINAI_MAX_OUTPUT_BYTES)"
            )


def count_outputs(
    job_root: Path,
    *,
    limits: OutputLimits,
    deadline: float | None = None,
    uid: int | None = None,
) -> None:
    """Raise like `collect_outputs` when the outputs under `job_root`/out break the
    limits; copy nothing."""
    root_fd = os.open(job_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with _fs_identity(uid):
            out_fd = _open_out(root_fd)
            if out_fd is not None:
                try:
                    _walk(out_fd, "", _Budget(limits, deadline), None)
                finally:
                    os.close(out_fd)
    finally:
        os.close(root_fd)


def _open_out(root_fd: int) -> int | None:
    """out/ below the job folder; None when the model removed it or made it a symlink."""
    try:
        return os.open("out", _DIR_FLAGS, dir_fd=root_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None  # the model removed it (same uid as ours): nothing to copy
    except OSError as err:
        if err.errno == errno.ELOOP:
            return None
        raise


def collect_outputs(
    job_root: Path,
    dest: Path,
    *,
    limits: OutputLimits,
    deadline: float | None = None,
    uid: int | None = None,
) -> list[OutputCopy]:
    """Copy every regular file under `job_root`/out into the existing folder `dest`,
    each under a new unique name; returns each one's path relative to out/ with its
    copy. `job_root` is the host's own folder (the model cannot replace it); `uid` the
    model's, whose permissions apply when we are root; `deadline` a `time.monotonic()`
    value. Raises OutputLimitError, HarvestTimeoutError or HarvestError (an output the
    model cannot read itself) with no copy left behind, or OSError."""
    budget = _Budget(limits, deadline)
    copies: list[OutputCopy] = []
    dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        root_fd = os.open(job_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with _fs_identity(uid):
                out_fd = _open_out(root_fd)
                if out_fd is None:
                    return []
                try:
                    # Counted first (names and sizes only), so that a job over a limit
                    # fails before a byte is copied; the copying walk counts again.
                    _walk(out_fd, "", budget, None)
                    budget = _Budget(limits, deadline)
                    _walk(out_fd, "", budget, _Copier(dest, dest_fd, uid, copies))
                finally:
                    os.close(out_fd)
        finally:
            os.close(root_fd)
    except BaseException:
        for copy in copies:
            with contextlib.suppress(OSError):
                os.unlink(copy.path.name, dir_fd=dest_fd)
        raise
    finally:
        os.close(dest_fd)
    return copies


class _Copier:
    """Where the copying walk puts its copies."""

    def __init__(self, dest: Path, dest_fd: int, uid: int | None, copies: list[OutputCopy]):
        self.dest = dest
        self.dest_fd = dest_fd
        self.uid = uid
        self.copies = copies


def _walk(dir_fd: int, prefix: str, budget: _Budget, copier: _Copier | None) -> None:
    """Count (and with a `copier`, copy) the entries below `dir_fd`."""
    # scandir on a descriptor: names only, never a path the model can redirect.
    with os.scandir(dir_fd) as entries:  # a duplicate, rewound when closed
        for entry in entries:
            budget.enter()
            name = entry.name
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode):
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except PermissionError as err:
                    raise _unreadable(f"{prefix}{name}/", err) from err
                except OSError:
                    continue  # swapped for a symlink or removed meanwhile
                try:
                    _walk(sub, f"{prefix}{name}/", budget, copier)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(info.st_mode):
                if copier is None:
                    budget.add(f"{prefix}{name}", info.st_size)
                    budget.total += info.st_size
                else:
                    copy = _copy_file(dir_fd, name, f"{prefix}{name}", budget, copier)
                    if copy is not None:
                        copier.copies.append(copy)
            # anything else (a symlink, a FIFO, a socket) is not an output


def _copy_file(
    dir_fd: int, name: str, rel: str, budget: _Budget, copier: _Copier
) -> OutputCopy | None:
    try:
        src = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except PermissionError as err:
        raise _unreadable(rel, err) from err
    except OSError:
        return None  # swapped for a symlink or something else, or removed meanwhile
    try:
        info = os.fstat(src)
        if not stat.S_ISREG(info.st_mode):
            return None
        budget.add(rel, info.st_size)
        copy_name = f"output-{uuid.uuid4().hex}"
        with _fs_identity(None if copier.uid is None else 0):  # the copy is the host's
            dst = os.open(copy_name, _COPY_FLAGS, 0o644, dir_fd=copier.dest_fd)
        copy = OutputCopy(name=rel, path=copier.dest / copy_name)
        try:
            copied = _copy_bounded(src, dst, rel, budget)
        except BaseException:
            os.close(dst)
            os.unlink(copy_name, dir_fd=copier.dest_fd)
            raise
        os.close(dst)
        budget.total += copied
        return copy
    finally:
        os.close(src)


def _copy_bounded(src: int, dst: int, rel: str, budget: _Budget) -> int:
    """Copy `src` to `dst` from the start; the file may grow meanwhile: at most one
    byte over its limits is read before they stop it."""
    allowed = min(budget.limits.max_file_bytes, budget.limits.max_total_bytes - budget.total)
    copied = 0
    while True:
        budget.check_time()
        want = min(_CHUNK, allowed + 1 - copied)
        sent = os.sendfile(dst, src, copied, want)
        if sent == 0:
            return copied
        copied += sent
        if copied > allowed:
            budget.add(rel, copied)  # raises: over one of the limits
            return copied  # pragma: no cover - add raised


def _unreadable(rel: str, err: OSError) -> HarvestError:
    return HarvestError(
        f"the output {rel!r} cannot be read with the model's own permissions "
        f"({err.strerror}); leave only readable files and folders in the output folder"
    )


_libc: ctypes.CDLL | None = None


@contextlib.contextmanager
def _fs_identity(uid: int | None) -> Iterator[None]:
    """Run the block with `uid` (and the same gid) as this thread's file-system
    identity, when we are root; a no-op for None or when we are not root. `setfsuid`
    is per thread (glibc passes it straight to the kernel), and dropping from 0 also
    drops the thread's file capabilities (CAP_DAC_OVERRIDE, ...) until it is restored."""
    if uid is None or os.geteuid() != 0:
        yield
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    previous_uid = _libc.setfsuid(uid)
    previous_gid = _libc.setfsgid(uid)
    try:
        if _libc.setfsuid(-1) != uid or _libc.setfsgid(-1) != uid:
            raise OSError(f"could not take the worker's file-system identity (uid {uid})")
        yield
    finally:
        _libc.setfsgid(previous_gid)
        _libc.setfsuid(previous_uid)
