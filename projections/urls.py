"""A URL a user gave, as the read models keep it and the API shows it: without the parts
that may hold a secret.

A job's input URL is often a presigned link (S3, GCS, Azure SAS), whose signature and
credential are query parameters, or carries a token as its userinfo
(`https://token@host/...`). The read models never hold either: every query value is
replaced by `***` (the names stay, so that a reader can tell what kind of link it was),
a query item without a value by `***`, the userinfo by `***`, and the fragment (never
sent to the server; OAuth puts tokens there) by `***`. The scheme, host, port and path
are kept as given. Only the executor, reading the job's event, sees the URL whole.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

__all__ = ["HIDDEN", "redacted_url", "redacted_urls_in"]

HIDDEN: Final = "***"

# A URL in prose: up to white space or a quote, not counting punctuation that ends it.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,;:!?)]")


def redacted_url(url: str) -> str:
    """`url` with its userinfo, query values and fragment replaced by `HIDDEN`; a URL
    that cannot be parsed is `HIDDEN` whole (it may be anything)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        return HIDDEN
    _, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{HIDDEN}@{hostport}" if at else hostport
    query = "&".join(_hidden_value(item) for item in parts.query.split("&")) if parts.query else ""
    fragment = HIDDEN if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _hidden_value(item: str) -> str:
    name, equals, _ = item.partition("=")
    return f"{name}={HIDDEN}" if equals else HIDDEN


def redacted_urls_in(text: str) -> str:
    """`text` (an error message, say, quoting a URL it could not fetch) with every URL
    in it redacted as `redacted_url` does."""
    return _URL_IN_TEXT.sub(lambda match: redacted_url(match.group()), text)
