"""A job's deadline as a submission gives it: the field `deadline_s` (in a JSON body or
a multipart form) or the `Cancel-After` header, as Replicate's API takes it: seconds
(`90`, `2.5`), or a duration in hours, minutes and seconds (`90s`, `5m`, `1h30m`).

Both given: they must say the same, else 422. A client that sends both most likely has
one set by a library or a proxy without knowing; picking one silently would run the
job under a deadline its author did not mean."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Final

from services.api.problems import ApiError

__all__ = ["CANCEL_AFTER", "job_deadline"]

CANCEL_AFTER: Final = "cancel-after"
_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
_DURATION: Final = re.compile(rf"(?:({_NUMBER})h)?(?:({_NUMBER})m)?(?:({_NUMBER})s)?")
_UNIT_S: Final = (3600.0, 60.0, 1.0)


def job_deadline(field: str | None, header: str | None, cap_s: float) -> datetime | None:
    """When the job's deadline passes (`field`: deadline_s as the form gives it,
    `header`: Cancel-After); None without one. `cap_s`: the longest deadline
    (setting CLINAI_MAX_JOB_DEADLINE_S)."""
    given = None if field is None or not field.strip() else _seconds(field, cap_s)
    after = None if header is None else _cancel_after(header, cap_s)
    if given is not None and after is not None and not math.isclose(given, after, abs_tol=1e-6):
        raise ApiError(
            422,
            "Conflicting deadlines",
            f"deadline_s says {given:g} s and the Cancel-After header {after:g} s: "
            "send one of the two",
        )
    seconds = given if given is not None else after
    return None if seconds is None else datetime.now(UTC) + timedelta(seconds=seconds)


def _seconds(text: str, cap_s: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    return _in_range(value, "deadline_s", cap_s)


def _cancel_after(text: str, cap_s: float) -> float:
    text = text.strip()
    value = math.nan
    if re.fullmatch(_NUMBER, text):
        value = float(text)
    elif text and (match := _DURATION.fullmatch(text)) is not None:
        value = sum(float(n) * unit for n, unit in zip(match.groups(), _UNIT_S, strict=True) if n)
    return _in_range(value, "the Cancel-After header", cap_s)


def _in_range(value: float, name: str, cap_s: float) -> float:
    if not (math.isfinite(value) and 0 < value <= cap_s):
        raise ApiError(
            422,
            "Invalid deadline",
            f"{name} is the job's deadline in seconds from submission: a number above 0 "
            f"and at most {cap_s:g} (setting CLINAI_MAX_JOB_DEADLINE_S); Cancel-After "
            "also takes units, e.g. 90s, 5m, 1h30m",
        )
    return value
