"""Build steps of the process runtime: shared virtualenvs keyed by the requirements hash,
read-only package copies keyed by the package hash, and the runner's copy."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import stat
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from services.runtimes._pip import PipOptions, build_step_env
from services.runtimes.base import BuildFailedError, LogSink

__all__ = [
    "ensure_runner_lib",
    "ensure_venv",
    "install_package",
    "run_step",
    "safe_component",
    "shown_paths",
]

_READY = ".clinai-ready"
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TAIL_LINES = 40


def safe_component(value: str, what: str) -> str:
    if not _COMPONENT.fullmatch(value):
        raise ValueError(f"{what} must match {_COMPONENT.pattern}, got {value!r}")
    return value


Shown = Sequence[tuple[str, str]]  # (host path, what users see instead)


def shown_paths(pairs: dict[str, str]) -> Shown:
    """Host paths of the platform and what a build log shows instead, longest first (a
    path inside another is replaced before it). The platform's own virtualenv is always
    in: pip's messages name it."""
    if sys.prefix != sys.base_prefix:
        pairs = {sys.prefix: "<clinai>", **pairs}
    return sorted(((k, v) for k, v in pairs.items() if k), key=lambda kv: -len(kv[0]))


def _shown(text: str, shown: Shown) -> str:
    for path, replacement in shown:
        if path in text:
            text = text.replace(path, replacement)
    return text


async def run_step(
    step: str,
    argv: list[str],
    log: LogSink,
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 1800.0,
    shown: Shown = (),
    echo_output: bool = True,
) -> str:
    """Run one build step, streaming its output to `log` line by line; its output.
    The log and an error's tail show `shown`'s replacements for host paths (the
    returned output is as the command printed it); `echo_output=False` logs only the
    command. `env` defaults to `build_step_env()` (no ClinAI settings)."""
    await log(f"$ {step}: {_shown(shlex.join(argv), shown)}\n")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=build_step_env() if env is None else env,
    )
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    output: list[str] = []

    async def pump() -> None:
        if proc.stdout is None:
            raise RuntimeError("stdout is not a pipe")
        async for raw in proc.stdout:
            line = raw.decode(errors="replace")
            if len(output) < 1000:
                output.append(line)
            if echo_output:
                line = _shown(line, shown)
                tail.append(line)
                await log(line)

    try:
        await asyncio.wait_for(pump(), timeout_s)
        code = await proc.wait()
    except TimeoutError as err:
        proc.kill()
        await proc.wait()
        raise BuildFailedError(
            f"{step} timed out after {timeout_s:.0f} s", log_tail="".join(tail)
        ) from err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if code != 0:
        raise BuildFailedError(
            f"{step} failed (exit code {code})",
            log_tail="".join(tail),
            hint="check the package's requirements.txt",
        )
    return "".join(output)


def _has_requirements(path: Path) -> bool:
    if not path.is_file():
        return False
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return any(lines)


def _open_up(root: Path) -> None:
    """Make a tree readable (and directories traversable) by the sandbox uid."""
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, os.stat(dirpath).st_mode | 0o755)
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)


async def ensure_venv(
    *,
    envs_root: Path,
    key: str,
    python: str,
    requirements: Path,
    pip: PipOptions,
    pip_cache_dir: Path,
    timeout_s: float,
    log: LogSink,
    lock: asyncio.Lock,
) -> tuple[Path, str]:
    """The environment for `key` (built if missing) and its interpreter's base prefix.
    Concurrent builds of one key: an in-process lock, and an atomic rename across processes."""
    final = envs_root / key
    async with lock:
        tmp = envs_root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        # Users see paths relative to their package, not the platform's layout.
        shown = shown_paths(
            {
                str(tmp): "<environment>",
                str(final): "<environment>",
                python: Path(python).name,
                str(requirements): "requirements.txt",
                str(pip_cache_dir): "<pip cache>",
                str(envs_root.parent): "<runtime data>",
            }
        )
        if not await asyncio.to_thread((final / _READY).is_file):
            await asyncio.to_thread(envs_root.mkdir, parents=True, exist_ok=True)
            try:
                await run_step(
                    "create virtualenv",
                    [python, "-m", "venv", "--without-pip", str(tmp)],
                    log,
                    shown=shown,
                )
                if _has_requirements(requirements):
                    await asyncio.to_thread(pip_cache_dir.mkdir, parents=True, exist_ok=True)
                    await run_step(
                        "pip install",
                        [
                            python,
                            "-m",
                            "pip",
                            "--python",
                            str(tmp / "bin" / "python"),
                            "install",
                            *pip.args(),
                            "--cache-dir",
                            str(pip_cache_dir),
                            "--disable-pip-version-check",
                            "--no-input",
                            "--progress-bar",
                            "off",
                            "-r",
                            str(requirements),
                        ],
                        log,
                        env=PipOptions.env(),
                        timeout_s=timeout_s,
                        shown=shown,
                    )
                else:
                    await log("requirements.txt is empty: nothing to install\n")
                await asyncio.to_thread(_open_up, tmp)
                (tmp / _READY).touch()
                try:
                    os.rename(tmp, final)
                except OSError:  # another process finished the same environment first
                    if not (final / _READY).is_file():
                        raise
            finally:
                if tmp.exists():
                    await asyncio.to_thread(shutil.rmtree, tmp, True)
        else:
            await log(f"reusing the environment for requirements {key}\n")
        out = await run_step(
            "inspect environment",
            [str(final / "bin" / "python"), "-c", "import sys;print(sys.base_prefix)"],
            log,
            shown=shown,
            echo_output=False,  # a host path
        )
    return final, out.strip().splitlines()[-1]


def _make_read_only(root: Path) -> None:
    for dirpath, dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode
            os.chmod(path, 0o555 if mode & stat.S_IXUSR else 0o444)
        for name in dirs:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o555)
    os.chmod(root, 0o555)


def install_package(package_dir: Path, artifacts_root: Path, package_hash: str) -> Path:
    """A read-only copy of the package under `artifacts_root/<package_hash>`."""
    final = artifacts_root / package_hash
    if final.is_dir():
        return final
    artifacts_root.mkdir(parents=True, exist_ok=True)
    tmp = artifacts_root / f".tmp-{package_hash}-{uuid.uuid4().hex[:8]}"
    shutil.copytree(package_dir, tmp, symlinks=False)
    _make_read_only(tmp)
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
    finally:
        if tmp.exists():
            _force_rmtree(tmp)
    return final


def _force_rmtree(path: Path) -> None:
    for dirpath, _dirs, _files in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o755)
    shutil.rmtree(path, ignore_errors=True)


def ensure_runner_lib(lib_root: Path) -> Path:
    """A copy of the runner package (what the sandbox imports), keyed by its content."""
    # `runner` ships next to `services` (same distribution, both top-level packages).
    source = Path(__file__).resolve().parents[2] / "runner"
    files = sorted(source.glob("*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    final = lib_root / f"runner-{digest.hexdigest()[:16]}"
    if (final / "runner").is_dir():
        return final
    tmp = lib_root / f".tmp-{uuid.uuid4().hex[:8]}"
    (tmp / "runner").mkdir(parents=True)
    for path in files:
        shutil.copyfile(path, tmp / "runner" / path.name)
    _open_up(tmp)
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / "runner").is_dir():
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
