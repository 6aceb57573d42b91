"""A model version's typed interface, as read from `run`'s signature in `predict.py`
(never by importing it): its inputs, and the result it declares, if any. Recorded in
`VersionUploaded`; a job's resolved inputs are recorded in `JobRequested`."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ["InputFile", "InputKind", "InputParam", "InputSchema", "OutputField"]

InputKind = Literal["file", "str", "int", "float", "bool"]
Choice = str | int | float | bool


class _Typed(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What an input and a declared result's key have in common: a name, a scalar kind,
    whether it is a list of them (`many`) or may be null, its literal choices, and
    whether it must be given."""

    name: str
    kind: InputKind
    many: bool = False
    nullable: bool = False
    choices: tuple[Choice, ...] | None = None
    required: bool = True


class InputParam(_Typed, frozen=True, kw_only=True, omit_defaults=True):
    """One parameter of `run`, with its constraints (`Input(...)`) and default."""

    default: Any = None  # when not required
    description: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None


class OutputField(_Typed, frozen=True, kw_only=True, omit_defaults=True):
    """One key of the result a `run` declares (a TypedDict return annotation); a
    `file` names a file the model wrote into its output folder."""


class InputSchema(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A typed `run`: its inputs in order, whether it takes `output_dir`, and its
    declared result (`output` None: any dict of JSON values)."""

    params: tuple[InputParam, ...] = ()
    takes_output_dir: bool = False
    output: tuple[OutputField, ...] | None = None
    output_name: str = ""  # the declared result's class name, for messages


class InputFile(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One file of a typed job: `name` is its file name in the job's input folder (what
    the resolved inputs hold), from `key` in the blob store or fetched from `url`."""

    name: str
    key: str = ""
    url: str | None = None
    filename: str = ""  # as the client named it
    size_bytes: int = 0
