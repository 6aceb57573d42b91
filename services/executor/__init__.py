"""The executor service: runs jobs on the runtime and records their outcomes."""

from services.executor.service import run_executor

__all__ = ["run_executor"]
