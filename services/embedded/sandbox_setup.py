"""`python -m services.embedded.sandbox_setup`: make sure bubblewrap (the process runtime's sandbox)
is installed. As root with apt it installs it; otherwise it prints what to do. It never
fails hard: the exit status is 0 either way, so `make up` can always call it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

__all__ = ["check_bwrap", "main"]

_APT_HINT = "sudo apt-get install -y bubblewrap libseccomp2"


def check_bwrap(bwrap: str = "bwrap") -> str | None:
    """Why bubblewrap cannot sandbox here, or None when it works."""
    path = shutil.which(bwrap)
    if path is None:
        return "bubblewrap is not installed"
    probe = subprocess.run(
        [path, "--unshare-all", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
         "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--proc", "/proc",
         "--dev", "/dev", "/usr/bin/true"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"bubblewrap cannot create namespaces: {probe.stderr.strip()}"
    return None


def _apt_install() -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "bubblewrap", "libseccomp2"],
    ):
        print("$", " ".join(argv), flush=True)
        try:
            done = subprocess.run(argv, env=env, check=False, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as err:
            print(f"  failed: {err}")
            return False
        if done.returncode != 0:
            print(f"  failed with exit code {done.returncode}")
            return False
    return True


def main() -> int:
    problem = check_bwrap()
    if problem is None:
        print("sandbox: bubblewrap works")
        return 0
    print(f"sandbox: {problem}")
    if problem == "bubblewrap is not installed":
        if os.geteuid() == 0 and shutil.which("apt-get"):
            if _apt_install() and (problem := check_bwrap()) is None:
                print("sandbox: bubblewrap installed and working")
                return 0
        else:
            print(f"sandbox: install it with `{_APT_HINT}` (or your distribution's package)")
    if problem is not None and "namespaces" in problem:
        print(
            "sandbox: allow user namespaces (sysctl kernel.unprivileged_userns_clone=1 or "
            "kernel.apparmor_restrict_unprivileged_userns=0), or run as root"
        )
    if shutil.which("setpriv") is None:
        print("sandbox: setpriv is missing too: `apt-get install util-linux`")
    print(
        "sandbox: until then the process runtime refuses to run models (unless started with "
        "unsafe_no_sandbox, for a trusted development machine only)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
