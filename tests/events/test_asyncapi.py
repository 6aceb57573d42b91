"""The stream's AsyncAPI 3.0 document (`events.asyncapi`): every event type of the
catalogue with its JSON Schema, a channel per subject pattern, and a document that is
AsyncAPI 3 in structure, every `$ref` resolving."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from events import event_subject
from events.asyncapi import asyncapi_document, catalogue_types
from events.subjects import AGGREGATES


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    document = asyncapi_document(stream="CLINAI", version="1.2.3")
    decoded: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(document))
    return decoded  # as served: JSON


def _refs(node: Any, where: str = "#") -> list[tuple[str, str]]:
    """(where, target) of every `$ref` in the document."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                found.append((where, value))
            else:
                found.extend(_refs(value, f"{where}/{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_refs(value, f"{where}/{index}"))
    return found


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    """The node a local JSON pointer `#/a/b` names (RFC 6901 escapes); KeyError if none."""
    if not ref.startswith("#/"):
        raise KeyError(f"{ref} is not a local reference")
    node: Any = doc
    for raw in ref[2:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def test_every_event_type_appears_with_its_schema(doc: dict[str, Any]) -> None:
    messages = doc["components"]["messages"]
    schemas = doc["components"]["schemas"]
    types = catalogue_types()
    assert len(types) >= 30
    assert set(messages) == {cls.__name__ for cls in types}
    for cls in types:
        name = cls.__name__
        message = messages[name]
        assert message["name"] == name
        assert message["contentType"] == "application/json"
        schema = _resolve(doc, message["payload"]["$ref"])
        assert schema is schemas[name]
        assert schema["type"] == "object"
        assert schema["properties"]["type"] == {"enum": [name]}  # the tag
        fields = {f.encode_name for f in msgspec.structs.fields(cls)}
        assert fields | {"type"} == set(schema["properties"]), name
        assert {"id", "aggregate_id", "occurred_at", "correlation_id"} <= set(schema["required"])


def test_a_channel_per_aggregate_whose_address_is_the_subject_pattern(
    doc: dict[str, Any],
) -> None:
    channels = doc["channels"]
    assert set(channels) == set(AGGREGATES)
    for cls in catalogue_types():
        channel = channels[cls.aggregate]
        assert cls.__name__ in channel["messages"]
        assert cls.__name__ in channel["parameters"]["event_type"]["enum"]
        # The subject an event is appended on fills the channel's address template.
        pattern = re.escape(channel["address"])
        pattern = pattern.replace(r"\{aggregate_id\}", "[^.]+").replace(r"\{event_type\}", "[^.]+")
        assert re.fullmatch(pattern, event_subject(cls.aggregate, "abc_1", cls.__name__))
    in_channels = [name for channel in channels.values() for name in channel["messages"]]
    assert len(in_channels) == len(set(in_channels)) == len(catalogue_types())


def test_the_document_is_asyncapi_3_in_structure(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc) <= {
        "asyncapi",
        "id",
        "info",
        "servers",
        "defaultContentType",
        "channels",
        "operations",
        "components",
    }
    assert isinstance(doc["info"]["title"], str) and doc["info"]["title"]
    assert doc["info"]["version"] == "1.2.3"
    assert "`CLINAI`" in doc["info"]["description"]
    for key, channel in doc["channels"].items():
        assert re.fullmatch(r"[A-Za-z0-9._-]+", key)
        params = set(re.findall(r"\{([^}]+)\}", channel["address"]))
        assert params == set(channel["parameters"]), key  # declared, each used
        for ref in channel["messages"].values():
            assert set(ref) == {"$ref"}
    assert doc["operations"], "no operation"
    for key, operation in doc["operations"].items():
        assert operation["action"] in ("send", "receive"), key
        channel_ref = operation["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/")
        # AsyncAPI 3: an operation's messages are messages of its own channel.
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel_ref}/messages/"), key
    operations = doc["operations"].values()
    covered = {m["$ref"].rsplit("/", 1)[1] for o in operations for m in o["messages"]}
    assert covered == set(doc["components"]["messages"])
    components = doc["components"]
    assert set(components) <= {
        "schemas",
        "servers",
        "channels",
        "operations",
        "messages",
        "securitySchemes",
        "serverVariables",
        "parameters",
        "correlationIds",
        "replies",
        "replyAddresses",
        "externalDocs",
        "tags",
        "operationTraits",
        "messageTraits",
        "serverBindings",
        "channelBindings",
        "operationBindings",
        "messageBindings",
    }
    for name in (*components["messages"], *components["schemas"]):
        assert re.fullmatch(r"[A-Za-z0-9.\-_]+", name), name  # component keys


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs = _refs(doc)
    assert len(refs) > 100
    unresolved = []
    for where, ref in refs:
        try:
            _resolve(doc, ref)
        except (KeyError, IndexError, ValueError, TypeError):
            unresolved.append(f"{where}: {ref}")
    assert unresolved == []


def test_the_ref_check_finds_a_dangling_ref(doc: dict[str, Any]) -> None:
    with pytest.raises(KeyError):
        _resolve(doc, "#/components/schemas/NoSuchEvent")
    with pytest.raises(KeyError):
        _resolve(doc, "https://example.com/schema.json")
