"""The docker runtime's settings, checked when they are made."""

from __future__ import annotations

from pathlib import Path

import msgspec

__all__ = ["DockerRuntimeConfig"]


class DockerRuntimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    base_image: str = "python:3.11-slim"  # deploy/base-image/build.sh makes one offline
    docker_host: str | None = None  # None: DOCKER_HOST, then the local socket
    registry: str | None = None  # push built images there; the artifact is then a digest
    registry_auth: dict[str, str] | None = None  # {"username": ..., "password": ...}
    image_repository: str = "clinai-model"
    pip_index_url: str | None = None  # build time only; may carry credentials
    pip_extra_index_urls: tuple[str, ...] = ()
    # Build time only. None: the host's Debian bundle if present, else pip's own.
    ca_bundle: Path | None = None
    memory_mb: int = 1024
    cpus: float = 1.0
    pids_limit: int = 64
    tmpfs_mb: int = 256  # the private /tmp (HOME, TMPDIR), emptied after each job
    user: str = "10001:10001"  # uid:gid inside the container, never 0
    idle_timeout_s: float = 300.0
    max_workers_per_version: int = 2
    max_workers_total: int = 8
    ready_timeout_s: float = 120.0  # import predict.py + setup(): then "setup_timeout"
    build_timeout_s: float = 1800.0
    # Bound into containers: must be a path the engine sees (a local engine).
    work_dir: Path = Path("/tmp/clinai-docker")
    log_limit_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        checks = {
            "memory_mb": self.memory_mb >= 16,
            "cpus": self.cpus > 0,
            "pids_limit": self.pids_limit >= 8,
            "tmpfs_mb": self.tmpfs_mb >= 1,
            "max_workers_per_version": self.max_workers_per_version >= 1,
            "max_workers_total": self.max_workers_total >= 1,
            "ready_timeout_s": self.ready_timeout_s > 0,
            "build_timeout_s": self.build_timeout_s > 0,
        }
        for field, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"DockerRuntimeConfig.{field} is out of range: {getattr(self, field)!r}"
                )
        uid, sep, gid = self.user.partition(":")
        if not (uid.isdigit() and sep and gid.isdigit()) or uid == "0":
            raise ValueError(f"DockerRuntimeConfig.user must be 'uid:gid', not root: {self.user!r}")
