"""Text that Postgres can store: the one rule every writer of an event checks.

Events end up in Postgres read models (`text` and `jsonb` columns), and Postgres refuses
two things a Python `str` can hold: the NUL character (U+0000, in `text` and in `jsonb`
as `\\u0000`) and lone surrogates (U+D800-U+DFFF, which are not UTF-8 at all; the event
codec refuses them too). An event carrying either would stop the projector, so they are
refused where text comes in (`text_problem`, `json_problem`) or, for text that must be
kept whatever it holds (a traceback, a build log), replaced (`scrub_text`).

Both checks are cheap on clean text: `json_problem` encodes the value once (in C) and
walks it only when the encoding shows a NUL escape or fails on a surrogate.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

__all__ = ["NUL_ESCAPE", "json_problem", "scrub_text", "text_problem"]

_REPLACEMENT: Final = "\ufffd"
NUL_ESCAPE: Final = b"\\u0000"  # how JSON writes U+0000
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")
_encoder: Final = msgspec.json.Encoder()


def text_problem(text: str) -> str | None:
    """Why Postgres cannot store `text` (a phrase to follow "it"), or None when it can."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            return f"contains a lone surrogate (\\u{ord(text[err.start]):04x})"
    return None


def json_problem(value: Any, path: str = "$") -> str | None:
    """Where and why Postgres cannot store the JSON value `value` (its strings and object
    keys), e.g. "$.x contains a NUL character (\\u0000)"; None when it can."""
    try:
        encoded = _encoder.encode(value)
    except UnicodeEncodeError:
        pass  # a lone surrogate somewhere: find it
    except (TypeError, ValueError, OverflowError):
        return None  # not JSON at all: the caller's own check says so
    else:
        if NUL_ESCAPE not in encoded:
            return None
    return _walk(value, path)


def _walk(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        problem = text_problem(value)
        return None if problem is None else f"{path} {problem}"
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (problem := text_problem(key)) is not None:
                return f"a key in {path} {problem}"
            found = _walk(item, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for n, item in enumerate(value):
            found = _walk(item, f"{path}[{n}]")
            if found is not None:
                return found
    return None


def scrub_text(text: str) -> str:
    """`text` with every NUL and lone surrogate replaced by U+FFFD (unchanged, and not
    copied, when it has none): for text that is kept whatever it holds."""
    if text_problem(text) is None:
        return text
    return _UNSTORABLE.sub(_REPLACEMENT, text)
