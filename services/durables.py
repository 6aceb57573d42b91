"""The names of the durable consumers the services read the stream with: each service
creates its own, and the API's readiness checks that the executor's exists (a service
package never imports another, so the names live here)."""

from __future__ import annotations

from typing import Final

__all__ = ["EXECUTOR_DURABLE"]

EXECUTOR_DURABLE: Final = "executor"
