"""Blob storage: the `BlobStore` port, its errors, and the `file` backend with the
endpoint that serves its signed URLs. (The `s3` backend will sit beside `file`.)"""

from services.blobstore.base import (
    BlobError,
    BlobKeyError,
    BlobNotFoundError,
    BlobSignatureError,
    BlobSignatureExpiredError,
    BlobSignatureInvalidError,
    BlobStore,
    BlobStream,
    validate_key,
    validate_prefix,
)
from services.blobstore.file import (
    SIGNED_BLOB_ROUTE,
    FileBlobStore,
    FileBlobStream,
    signed_blob_endpoint,
)

__all__ = [
    "SIGNED_BLOB_ROUTE",
    "BlobError",
    "BlobKeyError",
    "BlobNotFoundError",
    "BlobSignatureError",
    "BlobSignatureExpiredError",
    "BlobSignatureInvalidError",
    "BlobStore",
    "BlobStream",
    "FileBlobStore",
    "FileBlobStream",
    "signed_blob_endpoint",
    "validate_key",
    "validate_prefix",
]
