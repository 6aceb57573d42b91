"""Durable pull consumers with explicit acks, on FastStream: the plumbing the builder,
executor and notifier share.

One durable consumer per service on the one stream, filtered to the event types the
service handles (`Durable`). Scaling out is starting more processes on the same durable:
JetStream hands each message to one of them at a time. A service lists its handlers as
routes and consumes inside `subscribed(nc, durable, [durable_route(handler, durable)])`,
which runs them as `NatsRouter(handlers=routes, middlewares=[Answering(...)])` on a
FastStream broker over the service's own connection. Messages are asked for with pull
requests kept open on the server, sized by the handlers' free room (`StandingPulls`,
under FastStream's subscriber in `FastBatchPull`); each batch is what arrived since the
last (the notifier lingers `pull_linger_s` for more), and FastStream runs its pipeline
once per batch; one
middleware (`Answering`) hands each message on, its body turned into the handler's
`Delivery` by the one decoder in `events/` (`DeliveryDecoder`), runs the handler, at most
`Durable.concurrency` at a time, and answers the message:

- A handler that returns normally: the message is acked.
- `RetryLater`: nak with a delay (the handler's, else `ConsumerOptions.retry_delays_s`
  by delivery count); the server redelivers up to `max_deliver` times. A handler sees
  `Delivery.last_attempt` and must turn a retryable failure into a final event there.
- `Poison` or an undecodable message: `term` (no redelivery), with a log line.
- Any other exception: logged with its traceback, then nak with the retry delay.
- While a handler runs, `in_progress` is sent every `heartbeat_s`, so the server only
  redelivers a message whose process died (after `redelivery_s[n]` without a heartbeat:
  3 s on the first delivery).
- Leaving `subscribed`: no more requests; running handlers get `stop_grace_s` to
  finish, then they are cancelled and their messages nak'ed for immediate redelivery
  elsewhere.
- A durable deleted on the server is made again within `check_s`.
"""

from services.subscribers.delivery import Delivery, Handler, Poison, RetryLater, reaction_envelope
from services.subscribers.options import ConsumerOptions, ensure_consumer
from services.subscribers.route import Durable, durable_route
from services.subscribers.serve import quietly, stop_on_signals, subscribed

__all__ = [
    "ConsumerOptions",
    "Delivery",
    "Durable",
    "Handler",
    "Poison",
    "RetryLater",
    "durable_route",
    "ensure_consumer",
    "quietly",
    "reaction_envelope",
    "stop_on_signals",
    "subscribed",
]
