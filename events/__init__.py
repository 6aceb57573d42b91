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
    ServerTooOldError,
    StreamUnavailableError,
    UndecodableEventError,
    UnstorableTextError,
)
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
    "decode_event",
    "encode_event",
    "event_id_for_key",
    "event_subject",
    "event_to_builtins",
    "json_problem",
    "new_event_id",
    "new_id",
    "parse_subject",
    "scrub_text",
    "text_problem",
]
