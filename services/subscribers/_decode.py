"""How FastStream reads a durable's message: a custom parser that wraps it as cheaply
as it can, and a custom decoder that decodes its body with the one event decoder in
`events/` into the handler's `Delivery`."""

from __future__ import annotations

from typing import Any

import msgspec
from faststream.message import StreamMessage
from faststream.nats.message import NatsBatchMessage, NatsMessage
from nats.aio.msg import Msg

from events import decode_event
from services.subscribers.delivery import Delivery, Poison

__all__ = ["DeliveryDecoder", "parse_batch", "parse_message"]


def parse_message(msg: Msg) -> NatsMessage:
    """One message of a batch, for its handler. Events carry their ids in the body; the reply
    subject (stream, consumer, sequences) names this delivery, so FastStream does not
    make a uuid per message."""
    return NatsMessage(raw_message=msg, body=msg.data, correlation_id=msg.reply)


async def parse_batch(msgs: list[Msg]) -> NatsBatchMessage:
    """`parser=` of a durable's route: a fetched batch as it is (`Answering` reads each
    message with `parse_message` and `DeliveryDecoder`)."""
    return NatsBatchMessage(
        raw_message=msgs, body=[], correlation_id=msgs[0].reply if msgs else "batch"
    )


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
