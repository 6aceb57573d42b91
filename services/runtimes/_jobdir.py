"""A worker's job files on the host, made once with the worker and reused by every job
it serves (a worker serves one job at a time). The worker's directory is bound into
its sandbox or container at `inside`:

  in/<input>   the job's input, read-only for the model: a hard link to the stored
               file when the model runs as another user (it cannot write it), else a copy
  out/         where the model writes its outputs; copied out after a job (safely and
               within the job's limits: see `_harvest`), then emptied
  log          what the model prints during a job; emptied before each job

Making and removing folders per job cost more than the job itself on some disks; a
link, a truncate and a few unlinks do not, and the unlinks run between jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.runtimes._framing import JobRequest
from services.runtimes._harvest import HarvestError, collect_outputs, count_outputs
from services.runtimes.base import JobSpec, OutputCopy, OutputLimits

__all__ = ["JobFiles", "read_tail", "remove_tree"]

_INLINE_LOG_BYTES = 16 * 1024


class JobFiles:
    def __init__(self, root: Path, inside: str, *, link_input: bool) -> None:
        self.root = root
        self.in_dir = root / "in"
        self.out = root / "out"
        self.log = root / "log"
        self.inside = inside
        self._link_input = link_input
        self._clearing: asyncio.Future[None] | None = None
        self._linked = False  # the current job's input is a link, not a copy

    @classmethod
    def make(cls, root: Path, inside: str, uid: int | None) -> JobFiles:
        """Make in/, out/ and log under the existing `root`. The model may write out/
        and log only: they are given to `uid`, or made world-writable when `uid` is
        None (we are not root and cannot chown)."""
        files = cls(root, inside, link_input=uid is not None)
        files.in_dir.mkdir(mode=0o755)
        files.in_dir.chmod(0o755)
        files.out.mkdir()
        files.log.touch()
        if uid is not None:
            os.chown(files.out, uid, uid)
            os.chown(files.log, uid, uid)
        else:
            files.out.chmod(0o777)
            files.log.chmod(0o666)
        return files

    async def prepare(self, job: JobSpec) -> JobRequest:
        """Stage the job's files, once the last job's are cleared away; returns the
        request for the worker. Raises OSError when the files cannot be prepared: the
        worker must not serve the job then."""
        clearing, self._clearing = self._clearing, None
        if clearing is not None:
            await clearing
        # A link is a few metadata operations, cheaper inline than a thread hop (about
        # 0.3 ms here); a copy of a large input is not.
        self._linked = self._link_input and self._stage(job, link_only=True)
        if not self._linked:
            await asyncio.to_thread(self._stage, job, link_only=False)
        if job.inputs is None:
            return JobRequest(
                job_id=job.job_id,
                input_path=f"{self.inside}/in/{job.file_name}",
                output_dir=f"{self.inside}/out",
                log_path=f"{self.inside}/log",
                params=job.params,
            )
        inputs: dict[str, Any] = {}
        files: dict[str, str | list[str]] = {}
        for name, value in job.inputs.items():
            if name not in job.file_params or value is None:
                inputs[name] = value
            elif isinstance(value, list):
                files[name] = [f"{self.inside}/in/{n}" for n in value]
            else:
                files[name] = f"{self.inside}/in/{value}"
        return JobRequest(
            job_id=job.job_id,
            input_path="",
            output_dir=f"{self.inside}/out",
            log_path=f"{self.inside}/log",
            inputs=inputs,
            files=files,
        )

    def has_outputs(self) -> bool:
        """Whether out/ holds anything (a model running as our own uid may remove it)."""
        return _has_entries(self.out)

    async def harvest(
        self,
        dest: Path | None,
        log_limit: int,
        *,
        limits: OutputLimits,
        deadline: float | None = None,
        uid: int | None = None,
    ) -> tuple[str, list[OutputCopy]]:
        """The job's log tail and, unless `dest` is None, a copy of each output in
        `dest`, made within `limits` by `deadline` (`time.monotonic()`) with the
        permissions of `uid` (see `_harvest.collect_outputs`, whose errors it raises).
        With `dest` None (a failed job) the outputs are only counted: more than the
        limits allow raise too, as they would take long to clear.
        A job that wrote no output and a short log is read inline, others in a thread.
        Emptying in/ and out/ for the next job runs in the background (the next
        `prepare` waits for it), or inline when it is one unlink of the input's link.
        After an error nothing is emptied: the worker must not serve another job (its
        next `prepare` would raise)."""
        no_outputs = not _has_entries(self.out)
        over = False
        try:
            if no_outputs and _is_short(self.log):
                return read_tail(self.log, log_limit), []
            return await asyncio.to_thread(self._collect, dest, log_limit, limits, deadline, uid)
        except HarvestError:
            over = True
            raise
        finally:
            if over:
                self._clearing = asyncio.get_running_loop().create_future()
                self._clearing.set_exception(OSError("the last job's files were not cleared"))
            elif self._linked and no_outputs:
                self._clearing = _done(self._clear)
            else:
                self._clearing = asyncio.ensure_future(asyncio.to_thread(self._clear))
            # Retrieved here, so a worker killed before its next job leaves no warning;
            # the next `prepare` still raises it.
            self._clearing.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def cleared(self) -> None:
        """Wait until emptying in/ and out/ after `harvest` has ended, whether or not it
        worked (the next `prepare` raises what went wrong)."""
        if self._clearing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._clearing)

    def _stage(self, job: JobSpec, *, link_only: bool) -> bool:
        """Put each input at in/<name> and empty the log; False (nothing left behind)
        when `link_only` and an input cannot be linked."""
        done: list[Path] = []
        for name, source in job.staged():
            target = self.in_dir / name
            # A leftover (an interrupted job's) may be a link to a stored file: never
            # write through it.
            target.unlink(missing_ok=True)
            if not (self._link_input and _link_readable(source, target)):
                if link_only:
                    for linked in done:
                        linked.unlink(missing_ok=True)
                    return False
                shutil.copyfile(source, target)
                os.chmod(target, 0o444)
            done.append(target)
        os.truncate(self.log, 0)
        return True

    def _collect(
        self,
        dest: Path | None,
        log_limit: int,
        limits: OutputLimits,
        deadline: float | None,
        uid: int | None,
    ) -> tuple[str, list[OutputCopy]]:
        log = read_tail(self.log, log_limit)
        if dest is None:
            count_outputs(self.root, limits=limits, deadline=deadline, uid=uid)
            return log, []
        return log, collect_outputs(self.root, dest, limits=limits, deadline=deadline, uid=uid)

    def _clear(self) -> None:
        for folder in (self.in_dir, self.out):
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)


def _done(work: Callable[[], None]) -> asyncio.Future[None]:
    """`work` run now, as a finished future holding its error, if any."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    try:
        work()
    except OSError as err:
        future.set_exception(err)
    else:
        future.set_result(None)
    return future


def _has_entries(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is not None
    except FileNotFoundError:  # a model running as our own uid removed it: no outputs
        return False


def _is_short(log: Path) -> bool:
    try:
        return os.stat(log).st_size <= _INLINE_LOG_BYTES
    except OSError:  # gone: read_tail says ""
        return True


def _link_readable(source: Path, target: Path) -> bool:
    """Hard-link `source` at `target` if the model can read it there (readable by
    others, the same file system); False when a copy is needed instead."""
    try:
        if not os.stat(source).st_mode & stat.S_IROTH:
            return False
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        return False
    return True


async def remove_tree(path: Path, wait_s: float = 1.0) -> None:
    """Remove a dead worker's folder. One holding many files (a model that filled out/
    before it was stopped) takes longer than `wait_s` to remove and is left to finish in
    its thread, so that it never holds up the end of a job; the interpreter waits for
    that thread before it exits."""
    removal = asyncio.ensure_future(asyncio.to_thread(shutil.rmtree, path, True))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(removal), wait_s)


def read_tail(path: Path, limit: int) -> str:
    """The last `limit` bytes of a log, marked when truncated; "" if it does not exist."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except OSError:
        return ""
    text = data.decode(errors="replace")
    if size > limit:
        return f"[... {size - limit} earlier bytes omitted ...]\n{text}"
    return text
