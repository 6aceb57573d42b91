"""Events to and from bytes. One decoder for the whole union, built once."""

from __future__ import annotations

from typing import Any

import msgspec

from events.catalogue import AnyEvent, Event

__all__ = ["decode_event", "encode_event", "event_to_builtins"]

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> AnyEvent:
    """Raises msgspec.ValidationError naming the bad field's path."""
    return _decoder.decode(data)


def event_to_builtins(event: Event) -> dict[str, Any]:
    """The envelope and fields as JSON-ready builtins, `type` included."""
    out: dict[str, Any] = msgspec.to_builtins(event)
    return out
