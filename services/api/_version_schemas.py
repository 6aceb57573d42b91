"""Each version's typed inputs, compiled once per API process: read from the version's
`VersionUploaded` in the log the first time a job or a reader asks (a version's schema
never changes), then kept (the least recently used dropped beyond `kept`)."""

from __future__ import annotations

from collections import OrderedDict

from events import EventStore, VersionUploaded
from services.packages.schema import CompiledInputs

__all__ = ["LEGACY_SCHEMA", "VersionSchemas"]

# What a version in the form run(input_path, output_dir[, params]) takes.
LEGACY_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Inputs",
    "description": "run(input_path, output_dir, params): one input file and free params",
    "type": "object",
    "properties": {
        "input": {
            "type": "string",
            "format": "binary",
            "description": "the input file: the multipart part 'input', or in a JSON body "
            "an upload id ('input') or an http(s) URL ('input_url')",
            "x-clinai-file": True,
        },
        "params": {"type": "object", "description": "passed to run() as `params`"},
    },
    "required": ["input"],
    "x-clinai-form": "legacy",
}


class VersionSchemas:
    def __init__(self, store: EventStore, *, kept: int = 2_000) -> None:
        self._store = store
        self._kept = kept
        self._items: OrderedDict[str, CompiledInputs | None] = OrderedDict()
        self.reads = 0  # log reads (for tests)

    async def get(self, version_id: str) -> CompiledInputs | None:
        """The version's compiled inputs; None for the legacy form or an unknown id."""
        if version_id in self._items:
            self._items.move_to_end(version_id)
            return self._items[version_id]
        self.reads += 1
        history = await self._store.read_aggregate("version", version_id)
        uploaded = next(
            (s.event for s in history.events if isinstance(s.event, VersionUploaded)), None
        )
        if uploaded is None:
            return None
        compiled = None if uploaded.input_schema is None else CompiledInputs(uploaded.input_schema)
        self._items[version_id] = compiled
        if len(self._items) > self._kept:
            self._items.popitem(last=False)
        return compiled
