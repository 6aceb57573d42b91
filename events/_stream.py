"""The one stream: created with the configuration the design fixes (file storage,
`deny_delete`/`deny_purge`, direct gets, atomic batches), or updated to it."""

from __future__ import annotations

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError

from events.errors import StreamUnavailableError
from events.subjects import PREFIX

__all__ = ["ensure_stream"]


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
    try:
        try:
            info = await js.add_stream(config)
        except APIError as err:
            if err.err_code != 10058:  # stream name already in use with another config
                raise
            info = await js.update_stream(config)
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
