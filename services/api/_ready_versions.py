"""The ready versions jobs are submitted to, each with its model, kept in the API
process: submitting a job to a kept version costs no query.

A ready version never changes; its model can (its visibility, its deletion), and that
decides who may run it. So everything kept is dropped as soon as a projection commit
notice says a model changed, or cannot say (`ProjectionWatermark.changed`).
"""

from __future__ import annotations

from typing import Any

from projections import queries
from projections.queries import ModelView, VersionView
from projections.watermark import ProjectionWatermark

__all__ = ["ReadyVersions"]


class ReadyVersions:
    def __init__(self, pool: Any, watermark: ProjectionWatermark, *, kept: int = 10_000) -> None:
        self._pool = pool
        self._watermark = watermark
        self._max = kept
        self._kept: dict[str, tuple[VersionView, ModelView]] = {}
        self._as_of = 0  # the checkpoint up to which what is kept is known to hold
        self.reads = 0  # queries run (for tests)

    async def get(self, version_id: str) -> tuple[VersionView, ModelView] | None:
        """The version and its model (deleted or not), as `queries.get_version_with_model`."""
        checkpoint = self._watermark.checkpoint
        if self._kept and self._watermark.changed("model", self._as_of) is not False:
            self._kept.clear()
        self._as_of = checkpoint
        found = self._kept.get(version_id)
        if found is not None:
            return found
        self.reads += 1
        found = await queries.get_version_with_model(self._pool, version_id)
        if found is not None and found[0].status == "ready":
            if len(self._kept) >= self._max:
                self._kept.clear()
            self._kept[version_id] = found
        return found
