"""Engine calls about images: find one by reference and package hash, make sure the
base image is there, run a build, push to a registry."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import IO

import aiohttp
from aiodocker import Docker, DockerError

from services.runtimes._docker_build import (
    LABEL_PACKAGE_HASH,
    LABEL_REQUIREMENTS_HASH,
    BuildStream,
    dockerfile,
    write_context,
)
from services.runtimes._docker_config import DockerRuntimeConfig
from services.runtimes._pip import PipOptions
from services.runtimes.base import BuildFailedError, LogSink

__all__ = ["build_image", "build_package_image", "ensure_base_image", "image_id", "push_image"]


async def image_id(docker: Docker, ref: str, package_hash: str | None = None) -> str | None:
    """The image's id, or None when it is absent (or not labelled with `package_hash`).
    Other engine errors propagate (DockerError)."""
    try:
        info = await docker.images.inspect(ref)
    except DockerError as err:
        if err.status == 404:
            return None
        raise
    labels = (info.get("Config") or {}).get("Labels") or {}
    if package_hash is not None and labels.get(LABEL_PACKAGE_HASH) != package_hash:
        return None
    return str(info["Id"])


async def ensure_base_image(docker: Docker, base: str, log: LogSink) -> None:
    if await image_id(docker, base) is not None:
        return
    await log(f"pulling base image {base}\n")
    try:
        await docker.images.pull(base)
    except DockerError as err:
        raise BuildFailedError(
            f"the base image {base} is not present and cannot be pulled: {err.message}",
            hint="build it offline with deploy/base-image/build.sh, or configure a registry",
        ) from err


async def build_image(
    docker: Docker, *, context: IO[bytes], labels: dict[str, str], log: LogSink
) -> BuildStream:
    """Build `context` (a tar), untagged; the returned stream knows the image id and the
    steps that ran. Raises BuildFailedError naming the failing step with its last lines."""
    stream = BuildStream(log)
    try:
        async for item in docker.images.build(
            fileobj=context,
            encoding="identity",
            labels=labels,
            rm=True,
            forcerm=True,
            stream=True,
        ):
            await stream.feed(item)
    except DockerError as err:  # DockerStreamError: a step failed
        raise await stream.fail(err.message) from err
    except (aiohttp.ClientError, OSError) as err:
        raise BuildFailedError(
            f"lost the Docker engine during the build: {err}", hint="check the engine and retry"
        ) from err
    return stream


async def push_image(
    docker: Docker, *, tag: str, repository: str, auth: dict[str, str] | None, log: LogSink
) -> str:
    """Push `tag` as `repository:<same tag>`; return `repository@<digest>`."""
    name = tag.rpartition(":")[2]
    digest: str | None = None
    try:
        await docker.images.tag(tag, repository, tag=name)
        async for item in docker.images.push(repository, tag=name, auth=auth, stream=True):
            if isinstance(item.get("status"), str):
                await log(str(item["status"]) + "\n")
            aux = item.get("aux")
            if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
                digest = aux["Digest"]
    except DockerError as err:
        raise BuildFailedError(
            f"pushing {repository}:{name} failed: {err.message}",
            hint="check the registry address, that the engine trusts it, and the credentials",
        ) from err
    if digest is None:
        raise BuildFailedError(f"the registry returned no digest for {repository}:{name}")
    return f"{repository}@{digest}"


async def build_package_image(
    docker: Docker,
    config: DockerRuntimeConfig,
    *,
    runner_dir: Path,
    package_dir: Path,
    package_hash: str,
    requirements_hash: str,
    log: LogSink,
) -> BuildStream:
    """Build a package's image from the generated Dockerfile, within the configured
    time; untagged (the caller tags it once it passed its smoke check). The stream
    holds the image id and which steps ran or came from the cache."""
    pip = await PipOptions.with_host_ca(
        index_url=config.pip_index_url,
        extra_index_urls=config.pip_extra_index_urls,
        ca_bundle=config.ca_bundle,
    )
    text = dockerfile(base_image=config.base_image, user=config.user, package_hash=package_hash)
    context = await asyncio.to_thread(
        write_context,
        package_dir=package_dir,
        runner_dir=runner_dir,
        dockerfile_text=text,
        pip=pip,
    )
    labels = {LABEL_PACKAGE_HASH: package_hash, LABEL_REQUIREMENTS_HASH: requirements_hash}
    try:
        async with asyncio.timeout(config.build_timeout_s):
            stream = await build_image(docker, context=context, labels=labels, log=log)
    except TimeoutError as err:
        raise BuildFailedError(
            f"the build took longer than {config.build_timeout_s:g} s",
            hint="check the package index is reachable, or raise build_timeout_s",
        ) from err
    finally:
        context.close()
    return stream
