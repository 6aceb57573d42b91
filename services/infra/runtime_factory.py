"""The runtime a builder or executor uses, chosen by `Settings.runtime`.

Both services on one host must resolve the same work directory: the process runtime's
artifacts are paths under it, recorded in `VersionBuilt` and used by the executor.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from services.runtimes.base import Runtime
from services.settings import Settings

__all__ = ["make_runtime", "runtime_work_dir", "service_work_dir"]


def runtime_work_dir(settings: Settings) -> Path:
    return (Path(settings.data_dir) / "runtime" / settings.runtime).resolve()


def service_work_dir(settings: Settings, service: str) -> Path:
    """Scratch space of one service (downloaded packages, job files)."""
    return (Path(settings.data_dir) / service).resolve()


async def make_runtime(settings: Settings, *, sandbox_uid_base: int | None = None) -> Runtime:
    """Open the configured runtime; the caller closes it. The docker adapter (and its
    aiodocker dependency) is imported only when selected.

    `sandbox_uid_base` (process runtime, host running as root): where the search for a
    free range of sandbox uids starts. Every runtime on a host holds a range of its own
    (claimed with a lock, see services/runtimes/_uids.py); distinct starts keep, e.g.,
    the builder's smoke checks and the executor's workers apart without a search."""
    if settings.runtime == "process":
        from services.runtimes.process import ProcessRuntime, ProcessRuntimeConfig

        config = ProcessRuntimeConfig(
            work_root=str(runtime_work_dir(settings)),
            memory_limit_mb=settings.worker_memory_mb,
            max_processes=settings.worker_max_processes,
            tmp_size_mb=settings.worker_tmp_mb,
            idle_timeout_s=settings.worker_idle_timeout_s,
            setup_timeout_s=settings.setup_timeout_s,
            max_workers_per_version=settings.workers_per_version,
            max_workers_total=settings.workers_total,
            unsafe_no_sandbox=settings.unsafe_no_sandbox,
            extra_index_url=settings.pip_extra_index_url,
            ca_bundle=str(settings.ca_bundle) if settings.ca_bundle else None,
        )
        if settings.pip_index_url:
            config = msgspec.structs.replace(config, index_url=settings.pip_index_url)
        if sandbox_uid_base is not None:
            config = msgspec.structs.replace(config, sandbox_uid_base=sandbox_uid_base)
        return ProcessRuntime(config)
    from services.runtimes.docker import DockerRuntime, DockerRuntimeConfig

    docker_config = DockerRuntimeConfig(
        base_image=settings.docker_base_image,
        docker_host=settings.docker_host,
        registry=settings.registry,
        pip_index_url=settings.pip_index_url,
        pip_extra_index_urls=(
            (settings.pip_extra_index_url,) if settings.pip_extra_index_url else ()
        ),
        ca_bundle=settings.ca_bundle,
        memory_mb=settings.worker_memory_mb,
        pids_limit=settings.worker_max_processes,
        tmpfs_mb=settings.worker_tmp_mb,
        idle_timeout_s=settings.worker_idle_timeout_s,
        ready_timeout_s=settings.setup_timeout_s,
        max_workers_per_version=settings.workers_per_version,
        max_workers_total=settings.workers_total,
        work_dir=runtime_work_dir(settings),
    )
    return await DockerRuntime.connect(docker_config)
