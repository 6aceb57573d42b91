"""Build steps of the process runtime: shared virtualenvs keyed by the requirements hash,
read-only package copies keyed by the package hash, and the runner's copy."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import re
import resource
import shlex
import shutil
import stat
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from services.runtimes._build_sandbox import (
    BUILD_CACHE,
    BUILD_REQUIREMENTS,
    BuildSandbox,
    BuildTools,
    build_env,
    build_launch,
    readable_paths,
)
from services.runtimes._pip import PipOptions, build_step_env
from services.runtimes._sandbox import SANDBOX_ENV, BwrapLaunch
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
_BUILD_PROCESSES = 256  # RLIMIT_NPROC of a build's own uid (pip, compilers, make -j)


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
    launch: BwrapLaunch | None = None,
    max_processes: int | None = None,
) -> str:
    """Run one build step, streaming its output to `log` line by line; its output.
    The log and an error's tail show `shown`'s replacements for host paths (the
    returned output is as the command printed it); `echo_output=False` logs only the
    command. `env` defaults to `build_step_env()` (no ClinAI settings)."""
    await log(f"$ {step}: {_shown(shlex.join(argv), shown)}\n")
    proc = await asyncio.create_subprocess_exec(
        *(argv if launch is None else launch.argv),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=build_step_env() if env is None else env,
        pass_fds=() if launch is None else launch.fds,
        preexec_fn=None if max_processes is None else _nproc(max_processes),
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


def _nproc(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))

    return apply


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


# pip is needed only for requirements: the deploy image's interpreter has none.
_INTERPRETER_QUERY = (
    "import importlib.util, os, sys;"
    "pip = importlib.util.find_spec('pip');"
    "print(sys.base_prefix);print(sys._base_executable);"
    "print(os.path.dirname(pip.origin) if pip and pip.origin else '')"
)


_interpreters: dict[str, tuple[str, str, str]] = {}


async def _interpreter(python: str, log: LogSink, shown: Shown) -> tuple[str, str, str]:
    """The platform's interpreter (trusted; no package code runs): its base prefix,
    its base executable and the folder of its `pip` package ("" without one); asked
    once per process."""
    if python in _interpreters:
        return _interpreters[python]
    out = await run_step(
        "inspect interpreter",
        [python, "-I", "-c", _INTERPRETER_QUERY],
        log,
        shown=shown,
        echo_output=False,  # host paths
    )
    prefix, executable, pip_package = out.splitlines()[-3:]  # the last may be empty
    _interpreters[python] = (prefix, executable, pip_package)
    return prefix, executable, pip_package


def _hand_over(root: Path) -> None:
    """Make a tree readable by every sandbox uid and owned by us again (a build's uid
    is later a worker's: it must not own what workers mount)."""
    _open_up(root)
    if os.geteuid() == 0:
        for dirpath, dirs, files in os.walk(root):
            os.lchown(dirpath, 0, 0)
            for name in (*dirs, *files):
                os.lchown(os.path.join(dirpath, name), 0, 0)


def _give(path: Path, uid: int | None, *, recursive: bool = False) -> None:
    if uid is None:
        return
    os.lchown(path, uid, uid)
    if recursive:
        for dirpath, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                os.lchown(os.path.join(dirpath, name), uid, uid)


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
    tools: BuildTools | None,
) -> tuple[Path, str]:
    """The environment for `key` (built if missing) and its interpreter's base prefix.
    With `tools`, every step that can run a requirement's code runs in the build
    sandbox (`_build_sandbox`); None (unsafe mode only) runs them on the host.
    Concurrent builds of one key: an in-process lock, and an atomic rename across processes."""
    final = envs_root / key
    async with lock:
        tmp = envs_root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        scratch = envs_root / f".scratch-{key}-{uuid.uuid4().hex[:8]}"
        # Users see paths relative to their package, not the platform's layout.
        shown = shown_paths(
            {
                str(tmp): "<environment>",
                str(final): "<environment>",
                SANDBOX_ENV: "<environment>",
                python: Path(python).name,
                str(requirements): "requirements.txt",
                BUILD_REQUIREMENTS: "requirements.txt",
                str(pip_cache_dir): "<pip cache>",
                BUILD_CACHE: "<pip cache>",
                str(envs_root.parent): "<runtime data>",
            }
        )
        base_prefix, base_executable, pip_package = await _interpreter(python, log, shown)
        if not await asyncio.to_thread((final / _READY).is_file):
            await asyncio.to_thread(envs_root.mkdir, parents=True, exist_ok=True)
            try:
                steps = _Steps(log=log, shown=shown, timeout_s=timeout_s)
                if tools is not None:
                    # A cache per requirements set: a build's code can write into its
                    # cache, which no other requirements set's build then reads.
                    pip_cache_dir = pip_cache_dir / key
                    await asyncio.to_thread(_prepare, tmp, scratch, pip_cache_dir, tools.uid)
                    steps.sandbox = BuildSandbox(
                        tools=tools,
                        base_prefix=base_prefix,
                        env_dir=str(tmp),
                        tmp_dir=str(scratch),
                        cache_dir=str(pip_cache_dir),
                        pip_package=pip_package,
                        requirements=str(requirements),
                        read_only=readable_paths(pip),
                    )
                await steps.create(base_executable, python, tmp)
                if _has_requirements(requirements):
                    await asyncio.to_thread(pip_cache_dir.mkdir, parents=True, exist_ok=True)
                    await steps.pip_install(pip, python, tmp, requirements, pip_cache_dir)
                else:
                    await log("requirements.txt is empty: nothing to install\n")
                await asyncio.to_thread(_hand_over, tmp)
                with contextlib.suppress(FileNotFoundError):
                    (tmp / _READY).unlink()  # the build's own would be trusted
                (tmp / _READY).touch()
                try:
                    os.rename(tmp, final)
                except OSError:  # another process finished the same environment first
                    if not (final / _READY).is_file():
                        raise
            finally:
                for leftover in (tmp, scratch):
                    if leftover.exists():
                        await asyncio.to_thread(_force_rmtree, leftover)
        else:
            await log(f"reusing the environment for requirements {key}\n")
    return final, base_prefix


def _prepare(env_dir: Path, scratch: Path, cache: Path, uid: int | None) -> None:
    """The build's writable folders, owned by its uid."""
    env_dir.mkdir(mode=0o755)
    scratch.mkdir(mode=0o700)
    cache.mkdir(parents=True, exist_ok=True)
    _give(env_dir, uid)
    _give(scratch, uid)
    _give(cache, uid, recursive=True)


class _Steps:
    """The build's steps, in the build sandbox when `sandbox` is set, else on the host."""

    def __init__(self, *, log: LogSink, shown: Shown, timeout_s: float) -> None:
        self.log = log
        self.shown = shown
        self.timeout_s = timeout_s
        self.sandbox: BuildSandbox | None = None

    async def _run(self, step: str, argv: list[str], env: dict[str, str] | None) -> None:
        if self.sandbox is None:
            await run_step(
                step, argv, self.log, env=env, timeout_s=self.timeout_s, shown=self.shown
            )
            return
        launch = build_launch(self.sandbox, argv)
        try:
            await run_step(
                step,
                argv,
                self.log,
                env=build_env(),
                timeout_s=self.timeout_s,
                shown=self.shown,
                launch=launch,
                max_processes=_BUILD_PROCESSES if self.sandbox.tools.uid is not None else None,
            )
        finally:
            launch.close()

    async def create(self, base_executable: str, python: str, tmp: Path) -> None:
        if self.sandbox is None:
            argv = [python, "-m", "venv", "--without-pip", str(tmp)]
        else:
            argv = [base_executable, "-m", "venv", "--without-pip", SANDBOX_ENV]
        await self._run("create virtualenv", argv, None)

    async def pip_install(
        self, pip: PipOptions, python: str, tmp: Path, requirements: Path, cache: Path
    ) -> None:
        common = [
            *pip.args(),
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
        ]
        if self.sandbox is None:
            argv = [
                python, "-m", "pip", "--python", str(tmp / "bin" / "python"), "install",
                *common, "--cache-dir", str(cache), "-r", str(requirements),
            ]  # fmt: skip
        else:
            argv = [
                f"{SANDBOX_ENV}/bin/python", "-m", "pip", "install",
                *common, "--cache-dir", BUILD_CACHE, "-r", BUILD_REQUIREMENTS,
            ]  # fmt: skip
        await self._run("pip install", argv, PipOptions.env())


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
