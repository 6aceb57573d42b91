"""Builds the bubblewrap command line and the resource limits of a sandboxed worker.

Inside the sandbox: the system's /usr (read-only), the environment at /opt/clinai/env,
the runner at /opt/clinai/lib, the package at /pkg (all read-only), the worker's job
directory at /job (the only writable host path), a private tmpfs /tmp (size-limited,
writable by the worker, HOME and TMPDIR), no network, its own PID/IPC/UTS namespaces,
a /proc that shows only the sandbox's own processes, and a read-only root. The worker
starts in /opt/clinai/lib (so a user module named `runner` cannot shadow ours) and the
runner then changes to /pkg.

Every process in it runs under the seccomp filter of `_seccomp` (bwrap loads it just
before it executes the command). bwrap reads its options, which name host paths, from a
memfd (`--args FD`): the sandbox's pid 1 is bwrap's reaper, whose command line anyone
inside can read, and it is then `bwrap --args N` and the command. The kernel still
prints the host path of each bind mount's source folder in /proc/self/mountinfo (a
property of bind mounts); a work folder on a file system of its own shows only its
path within that file system.

When the host runs as root, bwrap runs privileged without a user namespace, and the
worker drops to an unprivileged host uid with setpriv (clearing every capability and the
bounding set, with no_new_privs): that uid's RLIMIT_NPROC is what stops a fork bomb (the
kernel does not enforce RLIMIT_NPROC for root). Otherwise bwrap makes a user namespace.
A build runs in the same kind of sandbox, with the host's network (`_build_sandbox`).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from pathlib import Path

import msgspec

__all__ = [
    "SANDBOX_ENV",
    "SANDBOX_JOB_ROOT",
    "SANDBOX_LIB",
    "SANDBOX_PACKAGE",
    "BwrapLaunch",
    "SandboxSpec",
    "bwrap_command",
    "bwrap_launch",
    "interpreter_binds",
    "isolation",
    "launch_with",
    "limits_preexec",
    "sandbox_env",
    "system_binds",
]

SANDBOX_ENV = "/opt/clinai/env"
SANDBOX_LIB = "/opt/clinai/lib"
SANDBOX_PACKAGE = "/pkg"
SANDBOX_JOB_ROOT = "/job"
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = (
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
)


class SandboxSpec(msgspec.Struct, frozen=True, kw_only=True):
    bwrap: str
    setpriv: str | None  # needed when `uid` is set
    venv: str
    runner_lib: str
    package: str
    job_root: str  # host path of the worker's writable directory
    base_prefix: str  # the interpreter the environment was made from
    uid: int | None  # drop to this host uid (host runs as root), else None
    tmp_size_mb: int


def system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for path in _SYSTEM_LINKS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _ETC:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


def interpreter_binds(base_prefix: str) -> list[str]:
    prefix = Path(base_prefix)
    if prefix == Path("/usr") or Path("/usr") in prefix.parents:
        return []
    args = ["--ro-bind", str(prefix), str(prefix)]
    # bwrap copies the host's modes onto the directories it creates (e.g. /root 0700).
    for parent in reversed(prefix.parents[:-1]):
        args += ["--chmod", "0755", str(parent)]
    return args


def bwrap_command(spec: SandboxSpec, argv: list[str]) -> list[str]:
    """The full command running `argv` (paths as seen inside) in the sandbox."""
    options, drop = _options_and_drop(spec)
    return [spec.bwrap, *options, *drop, *argv]


def isolation(
    *, uid: int | None, setpriv: str | None, share_net: bool = False
) -> tuple[list[str], list[str]]:
    """bwrap's namespace and capability options, and the command that drops to `uid`
    (or [] when the host is not root): what workers and builds share. `share_net`
    keeps the host's network namespace (a build reaches the package index)."""
    if uid is not None:
        if setpriv is None:
            raise ValueError("setpriv is required to drop to an unprivileged uid")
        namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
        if not share_net:
            namespaces.append("--unshare-net")
        caps = [
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CAP_SETUID",
            "--cap-add",
            "CAP_SETGID",
            "--cap-add",
            "CAP_SETPCAP",
        ]
        drop = [
            setpriv,
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ]
    else:
        namespaces = ["--unshare-all", *(["--share-net"] if share_net else [])]
        caps = ["--cap-drop", "ALL"]
        drop = []
    common = ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    return [*namespaces, *common, *caps], drop


def _options_and_drop(spec: SandboxSpec) -> tuple[list[str], list[str]]:
    """bwrap's options, and the command that drops to the worker's uid (or [])."""
    isolated, drop = isolation(uid=spec.uid, setpriv=spec.setpriv)
    options = [
        *isolated,
        *system_binds(),
        *interpreter_binds(spec.base_prefix),
        "--proc", "/proc", "--dev", "/dev",
        # the worker's own uid writes here (sticky, as a system /tmp)
        "--perms", "1777", "--size", str(spec.tmp_size_mb * 1024 * 1024), "--tmpfs", "/tmp",
        "--ro-bind", spec.venv, SANDBOX_ENV,
        "--ro-bind", spec.runner_lib, SANDBOX_LIB,
        "--ro-bind", spec.package, SANDBOX_PACKAGE,
        "--bind", spec.job_root, SANDBOX_JOB_ROOT,
        # bwrap creates missing mount points with restrictive modes: open them up.
        "--chmod", "0755", "/opt", "--chmod", "0755", "/opt/clinai",
        "--remount-ro", "/",
        "--chdir", SANDBOX_LIB,
    ]  # fmt: skip
    return options, drop


class BwrapLaunch:
    """bwrap's command line with its options in a memfd (`--args`) and the seccomp
    program in another (`--seccomp`). Pass `fds` to the child (`pass_fds`), then
    `close` them: the child holds its own copies."""

    def __init__(self, argv: list[str], fds: tuple[int, ...]) -> None:
        self.argv = argv
        self.fds = fds

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = ()


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def bwrap_launch(spec: SandboxSpec, argv: list[str], *, seccomp: bytes) -> BwrapLaunch:
    """`bwrap_command`, with the options (host paths) moved into a memfd and `seccomp`
    (a compiled BPF program, `_seccomp.bpf_program()`) loaded for the command."""
    options, drop = _options_and_drop(spec)
    return launch_with(spec.bwrap, options, drop, argv, seccomp=seccomp)


def launch_with(
    bwrap: str, options: list[str], drop: list[str], argv: list[str], *, seccomp: bytes
) -> BwrapLaunch:
    """bwrap running `drop + argv` with `options` in a memfd and `seccomp` loaded."""
    filter_fd = _memfd("clinai-seccomp", seccomp)
    try:
        options = ["--seccomp", str(filter_fd), *options]
        args_fd = _memfd("clinai-bwrap-args", b"".join(o.encode() + b"\0" for o in options))
    except BaseException:
        os.close(filter_fd)
        raise
    return BwrapLaunch([bwrap, "--args", str(args_fd), *drop, *argv], (filter_fd, args_fd))


def sandbox_env(*, python_path: str, home: str = "/tmp") -> dict[str, str]:
    return {
        "PATH": f"{SANDBOX_ENV}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": "/tmp",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "LANG": "C.UTF-8",
        "PYTHONPATH": python_path,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONNOUSERSITE": "1",
    }


def limits_preexec(
    *, memory_mb: int, max_processes: int | None, cpu_time_s: int | None, max_file_mb: int | None
) -> Callable[[], None]:
    """A preexec_fn setting the worker's rlimits (inherited by bwrap and the worker).
    `max_processes` only bites for a non-root uid: pass it when the worker drops to one."""

    def apply() -> None:
        size = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if max_processes is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
        if max_file_mb is not None:  # Python ignores SIGXFSZ: a bigger write raises EFBIG
            file_size = max_file_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        if cpu_time_s is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_time_s, cpu_time_s + 5))

    return apply
