"""The event catalogue, subjects, codec and the event-store client. Imports nothing of
the rest of the project."""

from events.catalogue import *  # noqa: F403
from events.catalogue import __all__ as _catalogue_all
from events.codec import decode_event, encode_event, event_to_builtins
from events.errors import (
    ClinaiError,
    ConcurrencyConflictError,
    EventStoreError,
    EventTooLargeError,
    IdempotencyKeyReusedError,
    ServerTooOldError,
    StreamUnavailableError,
    UndecodableEventError,
    UnstorableTextError,
)
from events.idempotency import check_same_request, request_digest_of
from events.ids import event_id_for_key, new_event_id, new_id
from events.inputs import InputFile, InputKind, InputParam, InputSchema, OutputField
from events.store import AggregateHistory, EventStore, StoredEvent
from events.subjects import aggregate_filter, event_subject, parse_subject
from events.text import json_problem, scrub_text, text_problem

__all__ = [
    *_catalogue_all,
    "AggregateHistory",
    "ClinaiError",
    "ConcurrencyConflictError",
    "EventStore",
    "EventStoreError",
    "EventTooLargeError",
    "IdempotencyKeyReusedError",
    "InputFile",
    "InputKind",
    "InputParam",
    "InputSchema",
    "OutputField",
    "ServerTooOldError",
    "StoredEvent",
    "StreamUnavailableError",
    "UndecodableEventError",
    "UnstorableTextError",
    "aggregate_filter",
    "check_same_request",
    "decode_event",
    "encode_event",
    "event_id_for_key",
    "event_subject",
    "event_to_builtins",
    "json_problem",
    "new_event_id",
    "new_id",
    "parse_subject",
    "request_digest_of",
    "scrub_text",
    "text_problem",
]
