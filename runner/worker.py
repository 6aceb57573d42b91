"""The worker loop: load ``predict.py`` once, call ``setup()``, then serve jobs.

The protocol uses private duplicates of the original stdin/stdout (or two FIFOs given
with ``--channel``); fds 0, 1 and 2 are re-pointed (``os.dup2``) so that whatever the
model or its C extensions print ends up in a log file and can never corrupt the protocol
stream.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import inspect
import json
import os
import platform
import shutil
import signal
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from runner.inputs import File
from runner.protocol import (
    INVALID_RESULT,
    MAX_FRAME,
    RESULT_TOO_LARGE,
    ProtocolError,
    encode,
    read_frame,
    write_frame,
)

__all__ = ["main"]

RunFn = Callable[..., Any]
SCRATCH = "/tmp"  # in a sandbox: the worker's private, size-limited tmpfs (HOME, TMPDIR)


def _redirect_output(path: str) -> None:
    """Point fds 1 and 2 at `path` (appending)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


def _error(err: BaseException, **extra: Any) -> dict[str, Any]:
    return {
        "ok": False,
        "error_type": type(err).__name__,
        "message": str(err) or type(err).__name__,
        "traceback": "".join(traceback.format_exception(err)),
        **extra,
    }


def _accepts(fn: RunFn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _call(run: RunFn, takes: frozenset[str], req: dict[str, Any]) -> Any:
    """run() as the job asks: typed (`inputs`, files as `File` paths, `output_dir` if
    run declares it) or run(input_path, output_dir[, params=])."""
    inputs = req.get("inputs")
    if inputs is not None:
        kwargs: dict[str, Any] = dict(inputs)
        for name, path in (req.get("files") or {}).items():
            kwargs[name] = [File(p) for p in path] if isinstance(path, list) else File(path)
        if "output_dir" in takes:
            kwargs["output_dir"] = Path(str(req["output_dir"]))
        return run(**kwargs)
    args = (str(req["input_path"]), str(req["output_dir"]))
    if "params" in takes:
        return run(*args, params=dict(req.get("params") or {}))
    return run(*args)


def _check_result(result: object) -> str | None:
    """Why `result` cannot be sent back, or None when it can."""
    if not isinstance(result, dict):
        return f"run() must return a dict of JSON values, it returned {type(result).__name__}"
    try:
        text = json.dumps(result, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        return f"run() returned a result that is not JSON-serialisable: {err}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        pass  # a lone surrogate: find where
    else:
        if "\\u0000" not in text:
            return None
    where = _unstorable(result, "$")
    if where is None:
        return None
    return (
        f"run() returned a result in which {where}, which cannot be stored: "
        "remove it (or encode binary data, e.g. as base64)"
    )


def _unstorable(value: object, path: str) -> str | None:
    """Where `value` holds text the platform cannot store (a NUL or a lone surrogate):
    the host's rule (`events.text`), which the runner cannot import."""
    if isinstance(value, str):
        if "\x00" in value:
            return f"{path} contains a NUL character (\\u0000)"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path} contains a lone surrogate"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _unstorable(key, f"a key in {path}") or _unstorable(item, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for n, item in enumerate(value):
            found = _unstorable(item, f"{path}[{n}]")
            if found is not None:
                return found
    return None


def _kill_strays() -> None:
    """Kill every other process the model left behind. Only inside a PID namespace,
    where kill(-1) reaches the sandbox's own processes and nothing else."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(-1, signal.SIGKILL)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _scratch_names() -> frozenset[str]:
    try:
        return frozenset(os.listdir(SCRATCH))
    except OSError:
        return frozenset()


def _remove(path: str) -> None:
    """Remove `path`, whatever modes the model gave it (it owns everything in /tmp)."""
    if not os.path.isdir(path) or os.path.islink(path):
        os.unlink(path)
        return
    try:
        shutil.rmtree(path)
        return
    except OSError:  # a folder without write or search permission: give it back
        pass
    os.chmod(path, stat.S_IRWXU)
    for name in os.listdir(path):
        _remove(os.path.join(path, name))
    os.rmdir(path)


def _empty_scratch(keep: frozenset[str]) -> None:
    """Remove what the job left in /tmp, so that the next job on this warm worker finds
    none of it. What setup() put there (`keep`, e.g. unpacked weights) stays."""
    try:
        names = os.listdir(SCRATCH)
    except OSError:
        return
    for name in names:
        if name not in keep:
            with contextlib.suppress(OSError, RecursionError):
                _remove(os.path.join(SCRATCH, name))


def _scratch_full_hint(err: BaseException) -> str:
    """A hint for a write that failed because the worker's /tmp is full, else ''."""
    if not (isinstance(err, OSError) and err.errno == errno.ENOSPC):
        return ""
    try:
        fs = os.statvfs(SCRATCH)
    except OSError:
        return ""
    if fs.f_bavail > 0:
        return ""
    size_mb = fs.f_blocks * fs.f_frsize // (1024 * 1024)
    return (
        f" ({SCRATCH} is full: it holds at most {size_mb} MiB; write large files to the"
        " output folder, or ask the operator to raise CLINAI_WORKER_TMP_MB)"
    )


def _live_threads() -> int:
    """The OS threads of this process, the runner's own included: any other one is the
    model's (or a library's) and may still touch the job's files."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # no /proc: the threads Python knows of
        return threading.active_count()


def _serve_job(
    run: RunFn, takes: frozenset[str], req: dict[str, Any], main_pid: int, idle_log: str
) -> dict[str, Any]:
    _redirect_output(str(req["log_path"]))
    started = time.perf_counter()
    response: dict[str, Any]
    try:
        result = _call(run, takes, req)
        if os.getpid() != main_pid:  # a fork of the model returned into the runner
            os._exit(0)
        problem = _check_result(result)
        if problem is None:
            response = {"ok": True, "result": result}
        else:
            response = {"ok": False, "error_type": INVALID_RESULT, "message": problem}
    except BaseException as err:
        if os.getpid() != main_pid:
            os._exit(1)
        response = _error(err)
        response["message"] += _scratch_full_hint(err)
    finally:
        if os.getpid() == main_pid:
            _redirect_output(idle_log)
    response.update(
        type="result", job_id=req.get("job_id"), duration_s=time.perf_counter() - started
    )
    response.setdefault("result", None)
    return response


def _send(fd: int, frame: dict[str, Any]) -> None:
    try:
        data = encode(frame)
    except (ProtocolError, TypeError, ValueError) as err:
        error_type, message = INVALID_RESULT, f"the response could not be sent: {err}"
        if isinstance(err, ProtocolError):  # larger than a frame
            error_type = RESULT_TOO_LARGE
            message = (
                f"the result run() returned is larger than a worker can send ({MAX_FRAME} "
                "bytes of JSON); return a small summary and write large data as files into "
                "output_dir"
            )
        data = encode(
            {
                "type": frame.get("type"),
                "job_id": frame.get("job_id"),
                "ok": False,
                "result": None,
                "error_type": error_type,
                "message": message,
                "duration_s": frame.get("duration_s", 0.0),
            }
        )
    write_frame(fd, data)


def _serve(stream: BinaryIO, out_fd: int, run: RunFn, idle_log: str, sandboxed: bool) -> int:
    main_pid = os.getpid()
    takes = frozenset(n for n in ("params", "output_dir") if _accepts(run, n))
    keep = _scratch_names() if sandboxed else frozenset()
    while True:
        req = read_frame(stream)
        if req is None:
            return 0
        if req.get("type") != "job":
            raise ProtocolError(f"unexpected frame type {req.get('type')!r}")
        response = _serve_job(run, takes, req, main_pid, idle_log)
        # Counted first: with no other thread left, no process can be started after the
        # strays are killed (one that a thread started before it ended is killed too).
        response["threads"] = _live_threads()
        if sandboxed:
            _kill_strays()
            _empty_scratch(keep)
        _send(out_fd, response)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner")
    parser.add_argument("package_dir", nargs="?", default=".")
    parser.add_argument("--check", action="store_true", help="import predict.py and exit")
    parser.add_argument("--log", default=os.devnull, help="where prints outside jobs go")
    parser.add_argument(
        "--sandboxed", action="store_true", help="in a PID namespace: kill strays after jobs"
    )
    parser.add_argument(
        "--channel",
        nargs=2,
        metavar=("REQUESTS", "RESPONSES"),
        help="speak the protocol over these two FIFOs instead of stdin/stdout",
    )
    args = parser.parse_args(argv)

    if args.channel:  # the host opened both ends already: neither open blocks
        in_fd = os.open(args.channel[0], os.O_RDONLY | os.O_CLOEXEC)
        out_fd = os.open(args.channel[1], os.O_WRONLY | os.O_CLOEXEC)
    else:
        in_fd, out_fd = os.dup(0), os.dup(1)  # private, non-inheritable
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    _redirect_output(args.log)
    stream = os.fdopen(in_fd, "rb")

    # Started from the runner's own directory (so `-m runner` cannot pick up a user module
    # named `runner`); the model runs from its package directory.
    package_dir = os.path.abspath(args.package_dir)
    os.chdir(package_dir)
    sys.path.insert(0, package_dir)
    ready: dict[str, Any] = {"type": "ready", "python": platform.python_version(), "setup_s": 0.0}
    try:
        module = importlib.import_module("predict")
    except BaseException as err:
        _send(out_fd, {**ready, **_error(err, stage="import")})
        return 1
    run = getattr(module, "run", None)
    if not callable(run):
        message = "predict.py must define run(input_path, output_dir) -> dict, or a typed run"
        _send(
            out_fd,
            {
                **ready,
                "ok": False,
                "stage": "check",
                "error_type": "MissingRun",
                "message": message,
                "traceback": None,
            },
        )
        return 1
    setup = getattr(module, "setup", None)
    if args.check or not callable(setup):
        _send(out_fd, {**ready, "ok": True})
        return 0 if args.check else _serve(stream, out_fd, run, args.log, args.sandboxed)
    started = time.perf_counter()
    try:
        setup()
    except BaseException as err:
        _send(
            out_fd,
            {**ready, **_error(err, stage="setup"), "setup_s": time.perf_counter() - started},
        )
        return 1
    _send(out_fd, {**ready, "ok": True, "setup_s": time.perf_counter() - started})
    return _serve(stream, out_fd, run, args.log, args.sandboxed)
