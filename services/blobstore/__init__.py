"""Blob storage: the `BlobStore` port, its errors, and the `file` backend (whose signed
URLs the API serves under `SIGNED_URL_PATH`). (The `s3` backend will sit beside `file`.)"""

from services.blobstore.base import (
    BlobError,
    BlobKeyError,
    BlobNotFoundError,
    BlobSignatureError,
    BlobSignatureExpiredError,
    BlobSignatureInvalidError,
    BlobStore,
    BlobStream,
    UploadTarget,
    validate_key,
    validate_prefix,
)
from services.blobstore.file import SIGNED_URL_PATH, FileBlobStore, FileBlobStream

__all__ = [
    "SIGNED_URL_PATH",
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
    "UploadTarget",
    "validate_key",
    "validate_prefix",
]
