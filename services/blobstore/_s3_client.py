"""How the s3 backend's aiobotocore clients are made: their settings, chosen for the
CPU each request costs (botocore's defaults sign, check and describe every request at
about 2 ms of CPU each; a job makes two to four), and the session they come from.

- No parameter validation: our calls are fixed.
- No extra checksums on requests or responses: each object's own SHA-256 covers its
  content (`_s3_stream`), checked on every read.
- A fixed User-Agent ("clinai"): botocore otherwise rebuilds its full string (SDK, OS,
  language, feature ids; about 30 sanitized components) twice per request.
- Timestamps (`Last-Modified` on every GET, `LastModified` in listings) parsed by the
  standard library, not by dateutil's general parser (`parse_timestamp`).
- No `Expect: 100-continue` on a PUT of a small body (`drop_small_expect`): botocore
  asks for it on every PUT with a body, and aiohttp then sends the headers, waits for
  the server's "100 Continue", and only then sends the body: a round trip more per
  PUT, to spare a body the server might refuse. Kept from 2 MiB up, the threshold
  the AWS SDKs for Go and Kotlin use.
- One client per store and process (`S3BlobStore`), its connections kept open and
  reused (aiohttp's pool: `max_pool_connections`, idle ones closed after 12 s).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.utils import determine_content_length, parse_timestamp

__all__ = ["EXPECT_FROM", "client_config", "drop_small_expect", "new_session", "parse_s3_timestamp"]

MAX_POOL_CONNECTIONS: Final = 64
USER_AGENT: Final = "clinai"
EXPECT_FROM: Final = 2 * 1024 * 1024  # bytes: smaller PUT bodies are sent with their headers


def client_config(
    connect_timeout_s: float, read_timeout_s: float, max_attempts: int, *, path_style: bool
) -> AioConfig:
    return AioConfig(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        signature_version="s3v4",  # presigned URLs too (every region and MinIO take it)
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=MAX_POOL_CONNECTIONS,
        parameter_validation=False,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent=USER_AGENT,
        # MinIO and other self-hosted servers are addressed by path, not by DNS name.
        s3={"addressing_style": "path" if path_style else "auto"},
    )


def new_session() -> AioSession:
    """A session on the usual AWS credential sources, its responses' timestamps parsed
    by `parse_s3_timestamp`."""
    session = get_session()
    factory = session.get_component("response_parser_factory")
    factory.set_parser_defaults(timestamp_parser=parse_s3_timestamp)
    return session


def parse_s3_timestamp(value: str) -> datetime:
    """An HTTP date (RFC 7231, as in Last-Modified) or ISO 8601 (S3's XML bodies), as
    an aware datetime; anything else (epoch seconds, other forms) by botocore's parser."""
    try:
        if value[:1].isdigit():
            parsed = datetime.fromisoformat(value)
        else:
            parsed = parsedate_to_datetime(value)
    except (ValueError, TypeError, IndexError):
        return parse_timestamp(value)  # type: ignore[no-any-return]
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def drop_small_expect(params: dict[str, Any], **_: Any) -> None:
    """For botocore's `before-call.s3` event, registered last (after its own handler
    that adds the header; a handler of `before-call.s3.PutObject` would run before it):
    no `Expect: 100-continue` for a body under `EXPECT_FROM` bytes. The header is never
    signed."""
    headers = params.get("headers", {})
    if "Expect" in headers:
        size = determine_content_length(params.get("body"))
        if size is not None and size < EXPECT_FROM:
            del headers["Expect"]
