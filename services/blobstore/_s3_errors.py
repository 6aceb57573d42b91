"""The S3 backend's errors: botocore's and aiohttp's failures mapped to the port's typed
errors, by error code and class, never by message text. The messages name the endpoint
and the bucket, never a credential (botocore's own messages are not passed on)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from services.blobstore.base import (
    BlobError,
    BlobExistsError,
    BlobNotFoundError,
    BlobUnavailableError,
)

__all__ = ["S3Target", "error_code", "mapped"]

_NOT_FOUND: Final = frozenset({"NoSuchKey", "404", "NotFound"})
# A conditional write refused: the key holds an object (or one is being written).
_EXISTS: Final = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
_NO_BUCKET: Final = frozenset({"NoSuchBucket"})
_CREDENTIALS: Final = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
        "InvalidClientTokenId",
        "403",
        "Forbidden",
    }
)
_CREDENTIALS_HINT: Final = (
    "Check the AWS credentials the service runs with (AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the instance role) and that the bucket policy "
    "grants them ClinAI's actions (see deploy/s3.md)."
)


class S3Target:
    """Where the store points, as errors name it: the endpoint and the bucket."""

    def __init__(self, endpoint_url: str | None, bucket: str) -> None:
        self.endpoint = endpoint_url or "AWS S3"
        self.bucket = bucket

    @property
    def what(self) -> str:
        return f"the blob store (S3 bucket {self.bucket!r} at {self.endpoint})"

    def unavailable(self, err: BaseException, *, code: str | None = None) -> BlobUnavailableError:
        """The outage `err` stands for (a failure that is not a missing key); `code`
        overrides its S3 error code."""
        code = code or error_code(err)
        if code in _NO_BUCKET:
            return BlobUnavailableError(
                self.what,
                "no_bucket",
                "the bucket does not exist",
                hint="Create the bucket, or set CLINAI_S3_BUCKET to an existing one.",
            )
        if code in _CREDENTIALS or isinstance(err, NoCredentialsError):
            problem = "no credentials were found" if code is None else f"refused ({code})"
            return BlobUnavailableError(
                self.what, "credentials", f"the credentials were {problem}", hint=_CREDENTIALS_HINT
            )
        shown = code or type(err).__name__
        return BlobUnavailableError(
            self.what,
            "unreachable",
            f"it cannot be reached ({shown})",
            hint="Check CLINAI_S3_ENDPOINT_URL and that the S3 service is up; retry.",
        )


def error_code(err: BaseException) -> str | None:
    """S3's error code of a `ClientError` (`NoSuchKey`, or the HTTP status of a HEAD,
    which has no body), else None."""
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code", "")) or None
    return None


# What a call to S3 may raise besides ClientError: the connection's failures.
_TRANSPORT: Final = (BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError, OSError)


@asynccontextmanager
async def mapped(
    target: S3Target, key: str | None = None, *, exclusive: str | None = None
) -> AsyncIterator[None]:
    """Turn what S3 raises inside the block into the port's errors: `BlobNotFoundError`
    for a missing `key`, `BlobExistsError` for a conditional write (`If-None-Match: *`)
    of `exclusive` that found an object, `BlobUnavailableError` for an outage. The
    port's own errors (raised by the block itself) pass as they are."""
    try:
        yield
    except BlobError:
        raise
    except ClientError as err:
        if key is not None and error_code(err) in _NOT_FOUND:
            raise BlobNotFoundError(key) from err
        if exclusive is not None and error_code(err) in _EXISTS:
            raise BlobExistsError(exclusive) from err
        raise target.unavailable(err) from err
    except _TRANSPORT as err:
        raise target.unavailable(err) from err
