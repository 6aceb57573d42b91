"""The builder service: builds uploaded versions into runnable artifacts."""

from services.builder.service import run_builder

__all__ = ["run_builder"]
