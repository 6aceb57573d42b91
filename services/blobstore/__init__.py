"""Blob storage: the `BlobStore` port, its errors, the `file` backend (whose signed
URLs the API serves under `SIGNED_URL_PATH`) and the `s3` backend (presigned URLs)."""

from services.blobstore.base import (
    BlobError,
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
from services.blobstore.s3 import S3BlobStore

__all__ = [
    "SIGNED_URL_PATH",
    "BlobError",
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
