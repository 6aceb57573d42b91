"""The one stream: created with the configuration the design fixes (file storage,
`deny_delete`/`deny_purge`, direct gets, atomic batches), or updated to it."""

from __future__ import annotations

import asyncio
import time

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import APIError

from events.errors import StreamUnavailableError
from events.subjects import PREFIX

__all__ = ["ensure_stream"]

_NO_PEERS = 10005  # "no suitable peers for placement": the servers have not met yet
_FORMING_S = 30.0  # how long a cluster that is coming up may take to have the replicas


async def ensure_stream(js: JetStreamContext, stream: str, replicas: int) -> int:
    """Create or update the stream; returns its own max_msg_size (0: none)."""
    config = StreamConfig(
        name=stream,
        subjects=[f"{PREFIX}.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        num_replicas=replicas,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
        allow_atomic=True,
        duplicate_window=120.0,
    )
    give_up_at = time.monotonic() + _FORMING_S
    try:
        while True:
            try:
                info = await _create_or_update(js, config)
                break
            except APIError as err:
                if err.err_code != _NO_PEERS or time.monotonic() > give_up_at:
                    raise
                await asyncio.sleep(0.25)  # a cluster still forming: ask again shortly
    except APIError as err:
        if err.err_code != _NO_PEERS:
            raise
        raise StreamUnavailableError(
            f"the NATS cluster has no {replicas} servers with JetStream to place the stream "
            f"on after {_FORMING_S:.0f} s: {err.description}",
            hint="start every server of the cluster, or set CLINAI_STREAM_REPLICAS to the "
            "number of servers",
        ) from err
    except nats.errors.TimeoutError as err:
        raise StreamUnavailableError(
            "JetStream did not answer while creating the stream",
            hint="check that the NATS server runs with JetStream enabled (-js)",
        ) from err
    except nats.js.errors.ServiceUnavailableError as err:
        raise StreamUnavailableError(
            "JetStream is not enabled on the NATS server",
            hint="start nats-server with -js",
        ) from err
    return max(info.config.max_msg_size or 0, 0)


async def _create_or_update(js: JetStreamContext, config: StreamConfig) -> StreamInfo:
    try:
        return await js.add_stream(config)
    except APIError as err:
        if err.err_code != 10058:  # stream name already in use with another config
            raise
        return await js.update_stream(config)
