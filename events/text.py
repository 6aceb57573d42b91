"""Text that Postgres can store: the one rule every writer of an event checks.

Events end up in Postgres read models (`text` and `jsonb` columns), and Postgres refuses
two things a Python `str` can hold: the NUL character (U+0000, in `text` and in `jsonb`
as `\\u0000`) and lone surrogates (U+D800-U+DFFF, which are not UTF-8 at all; the event
codec refuses them too). The read models and the API also read and write JSON with
orjson, which refuses integers outside the 64-bit range (Postgres would take them). An
event carrying any of these would stop the projector, so they are refused where values
come in (`text_problem`, `json_problem`) or, for text that must be kept whatever it holds
(a traceback, a build log), replaced (`scrub_text`).

Both checks are cheap on clean text: `json_problem` encodes the value once (in C) and
walks it only when the encoding shows a NUL escape or a number of 19 digits or more
(`may_be_unstorable`), or fails on a surrogate.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

__all__ = ["NUL_ESCAPE", "json_problem", "may_be_unstorable", "scrub_text", "text_problem"]

_REPLACEMENT: Final = "\ufffd"
NUL_ESCAPE: Final = b"\\u0000"  # how JSON writes U+0000
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")
_encoder: Final = msgspec.json.Encoder()
# A JSON number of 19 digits or more: maybe outside orjson's range, [-2**63, 2**64).
_LONG_NUMBER: Final = re.compile(rb"[:\[,]\s*-?[0-9]{19}")
_INT_MIN: Final = -(2**63)
_INT_END: Final = 2**64


def may_be_unstorable(encoded: bytes) -> bool:
    """Whether JSON `encoded` may hold a value Postgres or orjson refuses: a NUL escape
    or a long number (a hit is confirmed by walking the value)."""
    return NUL_ESCAPE in encoded or _LONG_NUMBER.search(encoded) is not None


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
    """Where and why Postgres cannot store the JSON value `value` (its strings, object
    keys and integers), e.g. "$.x contains a NUL character (\\u0000)"; None when it can."""
    try:
        encoded = _encoder.encode(value)
    except UnicodeEncodeError:
        pass  # a lone surrogate somewhere: find it
    except (TypeError, ValueError, OverflowError):
        return None  # not JSON at all: the caller's own check says so
    else:
        if not may_be_unstorable(encoded):
            return None
    return _walk(value, path)


def _walk(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        problem = text_problem(value)
        return None if problem is None else f"{path} {problem}"
    if isinstance(value, int) and not _INT_MIN <= value < _INT_END:
        return f"{path} is an integer outside the 64-bit range (send it as a string)"
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
