"""The dashboard's tests run against the API tests' stack (real NATS, Postgres, projector
and API processes; one per module)."""

from tests.api.conftest import stack, stack_env

__all__ = ["stack", "stack_env"]
