"""The seccomp policy's two renderings (a BPF program for bubblewrap, a Docker profile)
and bubblewrap's launch; the behaviour inside workers is in the contract
(test_contract.py: test_dangerous_system_calls_are_refused)."""

from __future__ import annotations

import errno
import json
import os

from services.runtimes._sandbox import SandboxSpec, bwrap_launch
from services.runtimes._seccomp import DENIED, bpf_program, docker_profile


def test_docker_profile_denies_what_the_bpf_program_denies() -> None:
    profile = json.loads(docker_profile())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"  # fails closed, as Docker's own
    allowed = {
        name
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and "args" not in rule
        for name in rule["names"]
    }
    denied = {
        name
        for rule in profile["syscalls"]
        if rule.get("errnoRet") == errno.EPERM and "args" not in rule
        for name in rule["names"]
    }
    assert set(DENIED) <= denied and not allowed & denied
    assert {"read", "write", "openat", "mmap", "futex"} <= allowed
    assert {"clone", "clone3", "socket", "personality"}.isdisjoint(allowed)  # by arguments
    [clone3] = [rule for rule in profile["syscalls"] if rule["names"] == ["clone3"]]
    assert clone3["errnoRet"] == errno.ENOSYS


def test_bpf_program_is_built_once() -> None:
    program = bpf_program()
    assert program and len(program) % 8 == 0  # sock_filter instructions
    assert bpf_program() is program


def test_bwrap_gets_its_options_and_the_filter_through_memfds() -> None:
    spec = SandboxSpec(
        bwrap="/usr/bin/bwrap",
        setpriv="/usr/bin/setpriv",
        venv="/host/secret/envs/abc",
        runner_lib="/host/secret/lib",
        package="/host/secret/artifacts/abc",
        job_root="/host/secret/workers/w1",
        base_prefix="/usr",
        uid=62000,
        tmp_size_mb=16,
    )
    launch = bwrap_launch(spec, ["/opt/clinai/env/bin/python", "-m", "runner"], seccomp=b"x" * 8)
    try:
        assert not any("/host/secret" in arg for arg in launch.argv), launch.argv
        seccomp_fd, args_fd = launch.fds
        assert launch.argv[:3] == ["/usr/bin/bwrap", "--args", str(args_fd)]
        options = os.pread(args_fd, 1 << 20, 0).split(b"\0")
        assert options[:2] == [b"--seccomp", str(seccomp_fd).encode()]
        assert b"/host/secret/workers/w1" in options
        assert os.pread(seccomp_fd, 64, 0) == b"x" * 8
    finally:
        launch.close()
    assert launch.fds == ()
