"""What a model's `predict.py` imports from the runner to declare typed inputs:

    from typing import Annotated
    from runner import File, Input

    def run(image: File, threshold: Annotated[float, Input(ge=0, le=1)] = 0.5) -> dict: ...

Standard library only. ClinAI reads these declarations from the source (never by
running it); at run time `Input` is inert and each file arrives as a `File`.
"""

from __future__ import annotations

import dataclasses
import pathlib

__all__ = ["File", "Input"]


class File(pathlib.PosixPath):
    """An input file: a read-only path inside the sandbox (a `pathlib.Path`)."""

    __slots__ = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Input:
    """Constraints and a description of one input, used as the metadata of
    `typing.Annotated[T, Input(...)]`. Bounds (`ge`, `gt`, `le`, `lt`) apply to numbers
    (to each item of a list), lengths and `pattern` to strings (`min_length` and
    `max_length` to the list itself for a list). Values must be literals: ClinAI reads
    them without running predict.py. Give a default as the parameter's default."""

    description: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
