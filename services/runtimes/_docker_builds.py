"""The docker runtime's builds: a package becomes an image (one per package and runner
revision, reused when present), smoke-checked before it is tagged, and pushed to a
registry when one is configured."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiodocker import Docker, DockerError

from services.runtimes._docker_build import RUNNER_REVISION, BuildStream, runner_digest
from services.runtimes._docker_config import DockerRuntimeConfig
from services.runtimes._docker_images import (
    build_package_image,
    ensure_base_image,
    image_id,
    push_image,
)
from services.runtimes.base import Artifact, BuildFailedError, LogSink, SandboxRuntimeError

__all__ = ["DockerBuilds"]

SmokeCheck = Callable[[Artifact, LogSink], Awaitable[None]]


class DockerBuilds:
    name = "docker"

    def __init__(
        self, docker: Docker, config: DockerRuntimeConfig, runner_dir: Path, smoke_check: SmokeCheck
    ) -> None:
        self._docker = docker
        self._config = config
        self._runner_dir = runner_dir
        self._smoke_check = smoke_check
        self._runner_digest: str | None = None  # of runner_dir's files, on the first build
        self._build_locks: dict[str, asyncio.Lock] = {}
        self.last_build: BuildStream | None = None  # which steps ran / hit the cache

    async def build(
        self, *, package_dir: Path, package_hash: str, requirements_hash: str, log: LogSink
    ) -> Artifact:
        try:
            return await self._build(package_dir, package_hash, requirements_hash, log)
        except (DockerError, aiohttp.ClientError, OSError) as err:
            raise SandboxRuntimeError(
                f"the Docker engine failed during the build: {err}",
                hint="check the engine (docker info) and retry the build",
            ) from err

    async def _build(
        self, package_dir: Path, package_hash: str, requirements_hash: str, log: LogSink
    ) -> Artifact:
        # The runner (revision and files) is in the tag: an image with another runner
        # is not reused.
        if self._runner_digest is None:
            self._runner_digest = await asyncio.to_thread(runner_digest, self._runner_dir)
        tag = (
            f"{self._config.image_repository}:{package_hash[:20]}"
            f"-r{RUNNER_REVISION}-{self._runner_digest}"
        )
        async with self._build_locks.setdefault(package_hash, asyncio.Lock()):
            built = await image_id(self._docker, tag, package_hash)
            if built is not None:
                await log(f"package {package_hash[:20]} is already built: reusing {tag}\n")
            else:
                await ensure_base_image(self._docker, self._config.base_image, log)
                built = await self._build_image(
                    tag, package_dir, package_hash, requirements_hash, log
                )
                await log(f"built {tag} ({built})\n")
            reference = built
            if self._config.registry:
                reference = await push_image(
                    self._docker,
                    tag=tag,
                    log=log,
                    auth=self._config.registry_auth,
                    repository=f"{self._config.registry}/{self._config.image_repository}",
                )
        return Artifact(
            runtime=self.name,
            reference=reference,
            package_hash=package_hash,
            details={
                "image": tag,
                "image_id": built,
                "base_image": self._config.base_image,
                "runner_revision": str(RUNNER_REVISION),
            },
        )

    async def _build_image(
        self,
        tag: str,
        package_dir: Path,
        package_hash: str,
        requirements_hash: str,
        log: LogSink,
    ) -> str:
        self.last_build = await build_package_image(
            self._docker,
            self._config,
            runner_dir=self._runner_dir,
            package_dir=package_dir,
            package_hash=package_hash,
            requirements_hash=requirements_hash,
            log=log,
        )
        built = self.last_build.image_id
        if built is None:
            raise BuildFailedError(
                "the engine did not report the built image's id",
                log_tail="\n".join(self.last_build.tail),
            )
        # Tagged only once it passed the smoke check: the tag means "good to reuse".
        await self._smoke_check(
            Artifact(runtime=self.name, reference=built, package_hash=package_hash), log
        )
        repository, _, name = tag.rpartition(":")
        await self._docker.images.tag(built, repository, tag=name)
        return built
