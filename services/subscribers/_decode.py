"""FastStream's custom decoder for the durables: a message's body decoded by the one
event decoder in `events/`, with its delivery facts, as the handler's `Delivery`."""

from __future__ import annotations

from typing import Any

import msgspec
from faststream.message import StreamMessage
from nats.aio.msg import Msg

from events import decode_event
from services.subscribers.delivery import Delivery, Poison

__all__ = ["DeliveryDecoder"]


class DeliveryDecoder:
    """`decoder=` of a durable's route; an undecodable body is `Poison`."""

    def __init__(self, max_deliver: int) -> None:
        self._max_deliver = max_deliver

    async def __call__(self, msg: StreamMessage[Any]) -> Delivery:
        raw: Msg = msg.raw_message
        try:
            event = decode_event(raw.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            raise Poison(f"undecodable event on {raw.subject}: {err}") from err
        meta = raw.metadata
        return Delivery(
            event=event,
            seq=meta.sequence.stream,
            num_delivered=meta.num_delivered or 1,
            max_deliver=self._max_deliver,
        )
