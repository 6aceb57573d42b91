"""The seccomp policy of every worker, in both runtimes: the system calls a model may make.

It is at least as strict as Docker's default profile for a container without added
capabilities, and fails closed the same way:

- every system call the host's libseccomp knows is allowed, except those in `DENIED`,
  which fail with EPERM: namespaces, mounts, kernel modules and kexec, the kernel
  keyring, io_uring, bpf and perf, ptrace and reading other processes' memory, NUMA
  policy, clocks, swap, reboot, accounting, quotas and the obsolete calls Docker refuses;
- `clone` with any namespace flag fails with EPERM; `clone3` (whose flags sit in memory
  a filter cannot read) fails with ENOSYS, so the C library falls back to `clone`;
- `socket(AF_VSOCK)` fails with EPERM; `personality` accepts only the values Docker's
  profile accepts (Linux personality with or without ASLR off for exec is refused);
- a system call this libseccomp does not know (newer than it) fails with ENOSYS, as on
  an older kernel, so C libraries fall back; a system call of another architecture
  (32-bit or x32 calls from an x86_64 process) kills the process.

The process runtime hands the compiled program to bubblewrap (`--seccomp FD`), the
Docker runtime the same policy as a Docker profile (`SecurityOpt: seccomp=<json>`).
Both are built once per runtime, by libseccomp (through `pyseccomp`'s ctypes binding).
"""

from __future__ import annotations

import errno
import functools
import json
import os
from typing import Any

from services.runtimes.base import RuntimeUnavailableError

__all__ = ["CLONE_NAMESPACE_FLAGS", "DENIED", "bpf_program", "docker_profile"]

DENIED: tuple[str, ...] = (
    # namespaces: a user namespace hands its creator every capability inside it
    "unshare", "setns",
    # mounts, old and new API, and changing the root
    "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "mount_setattr", "open_by_handle_at",
    # kernel modules and loading a new kernel
    "init_module", "finit_module", "delete_module", "create_module", "query_module",
    "get_kernel_syms", "kexec_load", "kexec_file_load",
    # the kernel keyring (shared across containers of a user)
    "keyctl", "add_key", "request_key",
    # large, bug-prone kernel surfaces
    "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open",
    "userfaultfd", "lookup_dcookie", "fanotify_init",
    # other processes: tracing, their memory and their file descriptors
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd",
    "kcmp",
    # memory placement across NUMA nodes (Docker: CAP_SYS_NICE only)
    "get_mempolicy", "set_mempolicy", "set_mempolicy_home_node", "mbind", "migrate_pages",
    "move_pages",
    # the machine: clocks, swap, power, accounting, quotas, names, the kernel log, I/O ports
    "settimeofday", "clock_settime", "swapon", "swapoff", "reboot", "acct", "quotactl",
    "quotactl_fd", "sethostname", "setdomainname", "syslog", "vhangup", "iopl", "ioperm",
    # obsolete or never implemented
    "_sysctl", "sysfs", "uselib", "ustat", "nfsservctl", "afs_syscall", "getpmsg",
    "putpmsg", "security", "tuxcall", "vserver",
)  # fmt: skip

# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (Docker's mask)
CLONE_NAMESPACE_FLAGS = 0x7E020000
_AF_VSOCK = 40
# PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and 0xffffffff (a query)
_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
_RULED = frozenset({"clone", "clone3", "socket", "personality"})  # decided by arguments
_MAX_SYSCALL_NR = 1024
_INSTALL_HINT = "install libseccomp (`apt-get install libseccomp2`)"


def _seccomp() -> Any:
    """pyseccomp, imported on first use: importing it loads libseccomp."""
    try:
        import pyseccomp
    except (ImportError, RuntimeError, OSError) as err:
        raise RuntimeUnavailableError(
            f"libseccomp cannot be loaded ({err}): workers need it for their seccomp filter",
            hint=_INSTALL_HINT,
        ) from err
    return pyseccomp


def _allowed(seccomp: Any) -> list[str]:
    """Every system call of the native architecture that libseccomp knows, minus the
    denied and those decided by their arguments."""
    names: list[str] = []
    for number in range(_MAX_SYSCALL_NR):
        try:
            name = seccomp.resolve_syscall(seccomp.Arch.NATIVE, number).decode()
        except ValueError:  # no system call has this number
            continue
        if name not in _RULED and name not in DENIED:
            names.append(name)
    return names


def _known(seccomp: Any, name: str) -> bool:
    return int(seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)) >= 0


@functools.cache
def bpf_program() -> bytes:
    """The policy compiled to a classic BPF program for this machine's architecture,
    as `seccomp(2)` and bubblewrap's `--seccomp FD` take it."""
    seccomp = _seccomp()
    eperm, enosys = seccomp.ERRNO(errno.EPERM), seccomp.ERRNO(errno.ENOSYS)
    arg = seccomp.Arg
    try:
        policy = seccomp.SyscallFilter(enosys)
        policy.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
        for name in _allowed(seccomp):
            policy.add_rule(seccomp.ALLOW, name)
        for name in DENIED:
            if _known(seccomp, name):  # absent on this architecture (e.g. iopl on arm64)
                policy.add_rule(eperm, name)
        policy.add_rule(seccomp.ALLOW, "clone", arg(0, seccomp.MASKED_EQ, CLONE_NAMESPACE_FLAGS, 0))
        flag = 1
        while flag <= CLONE_NAMESPACE_FLAGS:
            if flag & CLONE_NAMESPACE_FLAGS:
                policy.add_rule(eperm, "clone", arg(0, seccomp.MASKED_EQ, flag, flag))
            flag <<= 1
        # clone3 falls to the default action, ENOSYS
        policy.add_rule(seccomp.ALLOW, "socket", arg(0, seccomp.NE, _AF_VSOCK))
        policy.add_rule(eperm, "socket", arg(0, seccomp.EQ, _AF_VSOCK))
        for persona in _PERSONALITIES:
            policy.add_rule(seccomp.ALLOW, "personality", arg(0, seccomp.EQ, persona))
        try:  # a binary tree instead of a chain of comparisons (libseccomp >= 2.5)
            policy.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
        except OSError:
            pass
        return _export(policy)
    except OSError as err:
        raise RuntimeUnavailableError(
            f"the seccomp filter could not be built: {err}", hint=_INSTALL_HINT
        ) from err


def _export(policy: Any) -> bytes:
    with os.fdopen(os.memfd_create("clinai-seccomp", os.MFD_CLOEXEC), "w+b") as out:
        policy.export_bpf(out)
        out.seek(0)
        return out.read()


@functools.cache
def docker_profile() -> str:
    """The same policy as a Docker seccomp profile (JSON), for `SecurityOpt`. The engine
    resolves the names on its own architecture and skips those it does not know."""
    seccomp = _seccomp()
    allowed = _allowed(seccomp)

    def masked(flag: int, value: int) -> dict[str, Any]:
        return {"index": 0, "value": flag, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}

    def rule(
        names: list[str], action: str, *args: dict[str, Any], errno_ret: int = errno.EPERM
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {"names": names, "action": action}
        if action == "SCMP_ACT_ERRNO":
            entry["errnoRet"] = errno_ret
        if args:
            entry["args"] = list(args)
        return entry

    flags = [1 << bit for bit in range(32) if CLONE_NAMESPACE_FLAGS & (1 << bit)]
    syscalls = [
        rule(allowed, "SCMP_ACT_ALLOW"),
        rule(list(DENIED), "SCMP_ACT_ERRNO"),
        rule(["clone"], "SCMP_ACT_ALLOW", masked(CLONE_NAMESPACE_FLAGS, 0)),
        *(rule(["clone"], "SCMP_ACT_ERRNO", masked(flag, flag)) for flag in flags),
        # named: engines whose runc ignores defaultErrnoRet would answer EPERM
        rule(["clone3"], "SCMP_ACT_ERRNO", errno_ret=errno.ENOSYS),
        rule(["socket"], "SCMP_ACT_ALLOW", {"index": 0, "value": _AF_VSOCK, "op": "SCMP_CMP_NE"}),
        rule(["socket"], "SCMP_ACT_ERRNO", {"index": 0, "value": _AF_VSOCK, "op": "SCMP_CMP_EQ"}),
        *(
            rule(["personality"], "SCMP_ACT_ALLOW", {"index": 0, "value": p, "op": "SCMP_CMP_EQ"})
            for p in _PERSONALITIES
        ),
    ]
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.ENOSYS,
        "syscalls": syscalls,
    }
    return json.dumps(profile, separators=(",", ":"))
