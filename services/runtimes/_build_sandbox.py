"""The sandbox a process-runtime build runs in: creating the virtualenv and `pip install`
(which runs the build backends and `setup.py` of every sdist a requirement pulls in).

It is the workers' sandbox with the network of the host (pip reaches the package index):
the same namespaces (pid, ipc, uts), capabilities dropped, the same seccomp filter, an
unprivileged uid when the host is root (one of the runtime's claimed uids), a /proc of
its own, the system's /usr read-only. Visible on the host, and nothing else of it:

- the environment being built, writable, at /opt/clinai/env (where workers mount it,
  so the scripts and pyvenv.cfg pip and venv write name paths that work there);
- a private /tmp (a folder next to the environment, removed after the build), HOME too;
- the runtime's pip cache, writable, at /opt/clinai/pip-cache;
- pip itself (the platform's `pip` package), the requirements file, the interpreter's
  prefix, a CA bundle or a `file://` index named in the options: read-only.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import msgspec

from services.runtimes._pip import PipOptions
from services.runtimes._sandbox import (
    SANDBOX_ENV,
    BwrapLaunch,
    interpreter_binds,
    isolation,
    launch_with,
    sandbox_env,
    system_binds,
)

__all__ = [
    "BUILD_CACHE",
    "BUILD_PIP",
    "BUILD_REQUIREMENTS",
    "BuildSandbox",
    "BuildTools",
    "build_env",
    "build_launch",
    "readable_paths",
]

BUILD_PIP = "/opt/clinai/pip"  # holds the `pip` package
BUILD_CACHE = "/opt/clinai/pip-cache"
BUILD_REQUIREMENTS = "/opt/clinai/requirements.txt"
# name resolution, and what pip reports of the system (its user agent)
_NETWORK_FILES = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/os-release",
    "/etc/debian_version",
)
_PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


class BuildTools(msgspec.Struct, frozen=True, kw_only=True):
    bwrap: str
    setpriv: str | None  # needed when `uid` is set
    uid: int | None  # drop to this host uid (host runs as root), else None
    seccomp: bytes  # the workers' compiled filter


class BuildSandbox(msgspec.Struct, frozen=True, kw_only=True):
    tools: BuildTools
    base_prefix: str  # the interpreter's prefix, read-only at its own path
    env_dir: str  # host folder of the environment being built
    tmp_dir: str  # host folder for /tmp
    cache_dir: str  # host folder of the pip cache
    pip_package: str  # host folder of the `pip` package ("": the interpreter has none)
    requirements: str  # host path of requirements.txt
    read_only: tuple[str, ...] = ()  # more host paths, read-only at their own paths


def readable_paths(pip: PipOptions) -> tuple[str, ...]:
    """Host paths pip reads because the options name them: the CA bundle and any
    `file://` index."""
    paths = [str(pip.ca_bundle)] if pip.ca_bundle is not None else []
    for url in (pip.index_url, *pip.extra_index_urls):
        if url and urlsplit(url).scheme == "file":
            paths.append(url2pathname(urlsplit(url).path))
    return tuple(p for p in paths if os.path.exists(p) and not p.startswith("/etc/ssl/"))


def build_launch(sandbox: BuildSandbox, argv: list[str]) -> BwrapLaunch:
    """bwrap running `argv` (paths as seen inside) in the build sandbox."""
    tools = sandbox.tools
    isolated, drop = isolation(uid=tools.uid, setpriv=tools.setpriv, share_net=True)
    extra: list[str] = []
    for path in _NETWORK_FILES:
        if os.path.exists(path):
            extra += ["--ro-bind", path, path]
    for path in sandbox.read_only:
        extra += ["--ro-bind", path, path]
        for parent in reversed(Path(path).parents[:-1]):
            extra += ["--chmod", "0755", str(parent)]
    pip: list[str] = []  # none: the interpreter has no pip (a build needs it for requirements)
    if sandbox.pip_package:
        pip = ["--ro-bind", sandbox.pip_package, f"{BUILD_PIP}/pip", "--chmod", "0755", BUILD_PIP]
    options = [
        *isolated,
        *system_binds(),
        *interpreter_binds(sandbox.base_prefix),
        *extra,
        "--chmod", "0755", "/etc",  # a missing file is "not found", not "denied"
        "--proc", "/proc", "--dev", "/dev",
        "--bind", sandbox.tmp_dir, "/tmp",
        "--bind", sandbox.env_dir, SANDBOX_ENV,
        "--bind", sandbox.cache_dir, BUILD_CACHE,
        "--ro-bind", sandbox.requirements, BUILD_REQUIREMENTS,
        *pip,
        "--chmod", "0755", "/opt", "--chmod", "0755", "/opt/clinai",
        "--remount-ro", "/",
        "--chdir", "/",  # bwrap, still root without capabilities, cannot enter /tmp
    ]  # fmt: skip
    return launch_with(tools.bwrap, options, drop, argv, seccomp=tools.seccomp)


def build_env() -> dict[str, str]:
    """The build's environment: the workers' one with pip on the path and no pip
    configuration, plus the host's proxy settings (nothing else of the host's)."""
    env = sandbox_env(python_path=BUILD_PIP)
    env["PIP_CONFIG_FILE"] = os.devnull
    for name in _PROXY_VARS:
        for key in (name, name.upper()):
            if key in os.environ:
                env[key] = os.environ[key]
    return env
