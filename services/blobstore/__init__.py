"""Blob storage: the `BlobStore` port, its errors, the `file` backend (whose signed
URLs the API serves under `SIGNED_URL_PATH`) and the `s3` backend (presigned URLs).

`S3BlobStore` is imported on first use: the s3 backend loads aiobotocore and botocore
(about 200 modules, 13,000 objects the garbage collector walks on every full
collection, 9 MiB), which a process on the file backend does not need.
"""

from typing import TYPE_CHECKING

from services.blobstore.base import (
    BlobError,
    BlobExistsError,
    BlobIntegrityError,
    BlobKeyError,
    BlobNotFoundError,
    BlobSignatureError,
    BlobSignatureExpiredError,
    BlobSignatureInvalidError,
    BlobStore,
    BlobStream,
    BlobUnavailableError,
    BlobWriter,
    UploadTarget,
    validate_key,
    validate_prefix,
)
from services.blobstore.file import SIGNED_URL_PATH, FileBlobStore, FileBlobStream

if TYPE_CHECKING:
    from services.blobstore.s3 import S3BlobStore

__all__ = [
    "SIGNED_URL_PATH",
    "BlobError",
    "BlobExistsError",
    "BlobIntegrityError",
    "BlobKeyError",
    "BlobNotFoundError",
    "BlobSignatureError",
    "BlobSignatureExpiredError",
    "BlobSignatureInvalidError",
    "BlobStore",
    "BlobStream",
    "BlobUnavailableError",
    "BlobWriter",
    "FileBlobStore",
    "FileBlobStream",
    "S3BlobStore",
    "UploadTarget",
    "validate_key",
    "validate_prefix",
]


def __getattr__(name: str) -> object:
    if name == "S3BlobStore":
        from services.blobstore.s3 import S3BlobStore

        return S3BlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
