"""The stream described for its subscribers: an AsyncAPI 3.0 document built from the
catalogue and the subject layout.

One channel per aggregate, `clinai.<aggregate>.{aggregate_id}.{event_type}` (the
subjects events are appended on), whose messages are that aggregate's event types; one
`receive` operation per channel; one message and one JSON Schema (by msgspec, from the
Structs the decoder uses) per event type. Build it once: it only changes with the code.
"""

from __future__ import annotations

import inspect
from typing import Any, Final, get_args

import msgspec

from events.catalogue import AnyEvent, Event
from events.subjects import AGGREGATES, PREFIX

__all__ = ["ASYNCAPI_VERSION", "asyncapi_document", "catalogue_types"]

ASYNCAPI_VERSION: Final = "3.0.0"

_SCHEMAS: Final = "#/components/schemas/{name}"


def catalogue_types() -> tuple[type[Event], ...]:
    """Every event type of the catalogue, in its order."""
    return tuple(get_args(AnyEvent))


def _summary(cls: type) -> str | None:
    """The first paragraph of the class's own docstring (None: it has none)."""
    doc = cls.__dict__.get("__doc__")
    if not doc:
        return None
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def _message(cls: type[Event]) -> dict[str, Any]:
    name = cls.__name__
    message: dict[str, Any] = {
        "name": name,
        "title": name,
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/MessageHeaders"},
        "payload": {"$ref": _SCHEMAS.format(name=name)},
        "correlationId": {"$ref": "#/components/correlationIds/correlation"},
    }
    summary = _summary(cls)
    if summary:
        message["summary"] = summary
    return message


def _channel(aggregate: str, types: list[type[Event]]) -> dict[str, Any]:
    names = [cls.__name__ for cls in types]
    return {
        "address": f"{PREFIX}.{aggregate}.{{aggregate_id}}.{{event_type}}",
        "title": f"{aggregate} events",
        "description": (
            f"Every event of a {aggregate} aggregate, on one subject per event. Filter on "
            f"`{PREFIX}.{aggregate}.*.<EventType>` for one type, "
            f"`{PREFIX}.{aggregate}.<id>.*` for one {aggregate}."
        ),
        "parameters": {
            "aggregate_id": {"description": f"the {aggregate}'s id (its `aggregate_id`)"},
            "event_type": {"enum": names, "description": "the event's `type`"},
        },
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
    }


def asyncapi_document(*, stream: str, version: str) -> dict[str, Any]:
    """The document for a stream named `stream`; `version` is ClinAI's."""
    types = catalogue_types()
    by_aggregate: dict[str, list[type[Event]]] = {a: [] for a in AGGREGATES}
    for cls in types:
        by_aggregate.setdefault(cls.aggregate, []).append(cls)
    _, schemas = msgspec.json.schema_components(types, ref_template=_SCHEMAS)
    schemas["MessageHeaders"] = {
        "type": "object",
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": "the event's `id`: JetStream deduplicates appends by it",
            }
        },
    }
    channels = {a: _channel(a, t) for a, t in by_aggregate.items() if t}
    operations = {
        f"receive_{aggregate}_events": {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{aggregate}"},
            "summary": f"Consume {aggregate} events from the stream",
            "messages": [
                {"$ref": f"#/channels/{aggregate}/messages/{name}"} for name in channel["messages"]
            ],
        }
        for aggregate, channel in channels.items()
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "ClinAI event stream",
            "version": version,
            "description": (
                f"Every state change ClinAI records, as events on the NATS JetStream stream "
                f"`{stream}` (subjects `{PREFIX}.>`), the source of truth. Read it with a "
                "durable consumer filtered to the subjects you need; events are JSON, "
                "tagged by `type`, and never change once appended (new fields are "
                "optional, so decode with unknown fields allowed)."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {cls.__name__: _message(cls) for cls in types},
            "schemas": schemas,
            "correlationIds": {
                "correlation": {
                    "description": "follows one upload or job across services",
                    "location": "$message.payload#/correlation_id",
                }
            },
        },
    }
