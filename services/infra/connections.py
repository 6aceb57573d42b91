"""Opening the infrastructure every service shares, from the settings: the NATS
connection and event store, and the blob store. One place, so each service wires the
same way."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

from nats.aio.client import Client as NATS

from events import EventStore
from services.blobstore import BlobStore, BlobUnavailableError, FileBlobStore
from services.infra.secret_files import generated_secret
from services.outages import Outage, nats_callbacks
from services.settings import Settings, SettingsError

__all__ = [
    "connect_nats",
    "nats_credentials",
    "open_blob_store",
    "open_event_store",
    "report_blob_store",
    "signing_key",
]


def nats_credentials(servers: list[str]) -> dict[str, str]:
    """The token (or user and password) the first of `servers` carries, as options of
    nats-py's `connect`: it then presents them to every server, also to those a cluster
    announces, whose URLs carry none (nats-py would connect to those anonymously)."""
    userinfo = urlsplit(servers[0]) if servers else None
    if userinfo is None or userinfo.username is None:
        return {}
    if userinfo.password is None:
        return {"token": userinfo.username}
    return {"user": userinfo.username, "password": userinfo.password}


async def connect_nats(settings: Settings, *, name: str, outage: Outage | None = None) -> NATS:
    """Connected to one of the servers CLINAI_NATS_URL lists, reconnecting forever (to
    any of them, or of the cluster's other servers); a lost connection is logged once
    when it goes and once when it is back (to `outage`, by default one logging to
    clinai.<name>)."""
    if settings.nats_url is None:
        raise SettingsError(
            "CLINAI_NATS_URL is not set: point it at a NATS server, or use `clinai up`"
        )
    nc = NATS()
    outage = outage or Outage("NATS", logging.getLogger(f"clinai.{name}"))
    callbacks = nats_callbacks(outage, nc)
    await nc.connect(
        settings.nats_servers,
        name=f"clinai-{name}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,  # type: ignore[arg-type]  # annotated int, used as float
        connect_timeout=5,
        **nats_credentials(settings.nats_servers),  # type: ignore[arg-type]
        error_cb=callbacks.error_cb,
        disconnected_cb=callbacks.disconnected_cb,
        reconnected_cb=callbacks.reconnected_cb,
    )
    return nc


async def open_event_store(settings: Settings, nc: NATS) -> EventStore:
    return await EventStore.open(nc, stream=settings.stream_name, replicas=settings.stream_replicas)


def signing_key(settings: Settings) -> bytes:
    """The key that signs blob download URLs: CLINAI_SIGNING_KEY, or one generated once
    into the data directory (mode 0600) and shared by the processes that use it."""
    if settings.signing_key:
        if len(settings.signing_key) < 32:
            raise SettingsError("CLINAI_SIGNING_KEY must be at least 32 characters")
        return settings.signing_key.encode()
    return generated_secret(Path(settings.data_dir) / "signing.key").encode()


def open_blob_store(settings: Settings) -> BlobStore:
    """The store CLINAI_BLOB_BACKEND names (no I/O: connections are made on first use).
    The s3 backend's local scratch folder (uploads being received, job outputs) is
    `<data_dir>/spool`."""
    if settings.blob_backend == "s3":
        from services.blobstore.s3 import S3BlobStore  # aiobotocore: loaded for s3 only

        return S3BlobStore(
            bucket=settings.s3_bucket,
            region=settings.s3_region,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            public_endpoint_url=settings.s3_public_endpoint_url,
            spool=settings.data_dir / "spool",
        )
    return FileBlobStore(settings.blob_root, settings.api_url, signing_key(settings))


async def report_blob_store(blobs: BlobStore, log: logging.Logger) -> None:
    """At a service's start: say clearly when the blob store cannot be used (S3
    unreachable, its bucket missing, the credentials refused). The service starts all
    the same: what needs the store fails as an outage until it is back."""
    try:
        await blobs.check()
    except BlobUnavailableError as err:
        log.error("%s; %s", err.message, err.hint)
