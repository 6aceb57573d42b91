"""Events to and from bytes. One decoder for the whole union, built once."""

from __future__ import annotations

from typing import Any

import msgspec

from events._stored import StoredEvent
from events.catalogue import AnyEvent, Event
from events.errors import UndecodableEventError, UnstorableTextError
from events.text import json_problem, may_be_unstorable

__all__ = ["decode_event", "decode_stored", "encode_event", "event_to_builtins"]

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)


def encode_event(event: Event) -> bytes:
    """The event as JSON. Raises UnstorableTextError for text (or an integer) the read
    models cannot store (see `events.text`): such an event never reaches the log. Costs
    two searches of the encoded bytes; only a hit (or a lone surrogate) walks the event."""
    try:
        data = _encoder.encode(event)
    except UnicodeEncodeError:
        data = b""  # a lone surrogate: find where
    else:
        if not may_be_unstorable(data):
            return data
    where = json_problem(msgspec.to_builtins(event, str_keys=True))
    if where is None:  # a literal backslash before "u0000", digits in text: all fine
        return data
    raise UnstorableTextError(event.type, where)


def decode_event(data: bytes) -> AnyEvent:
    """Raises msgspec.ValidationError naming the bad field's path."""
    return _decoder.decode(data)


def decode_stored(seq: int, subject: str, data: bytes) -> StoredEvent:
    """The event stored at `seq`; UndecodableEventError (naming it) when it is none."""
    try:
        return StoredEvent(seq, _decoder.decode(data))
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise UndecodableEventError(seq, subject, str(err)) from err


def event_to_builtins(event: Event) -> dict[str, Any]:
    """The envelope and fields as JSON-ready builtins, `type` included."""
    out: dict[str, Any] = msgspec.to_builtins(event)
    return out
