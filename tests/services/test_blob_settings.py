"""The blob store settings: the backend CLINAI_BLOB_BACKEND names, the s3 settings read
and checked, and the store opened without I/O."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.blobstore import FileBlobStore, S3BlobStore
from services.infra.connections import open_blob_store
from services.settings import Settings, SettingsError


def test_the_file_backend_is_the_default(tmp_path: Path) -> None:
    settings = Settings.from_env({"CLINAI_DATA_DIR": str(tmp_path)})
    assert settings.blob_backend == "file"
    assert isinstance(open_blob_store(settings), FileBlobStore)


def test_the_file_backend_does_not_load_the_s3_client(tmp_path: Path) -> None:
    # A fresh interpreter: this one may have imported the s3 backend for other tests.
    code = (
        "import sys\n"
        "import services.api.app, services.executor, services.notifier, services.builder\n"
        "from services.infra.connections import open_blob_store\n"
        "from services.settings import Settings\n"
        f"open_blob_store(Settings.from_env({{'CLINAI_DATA_DIR': {str(tmp_path)!r}}}))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiobotocore', 'botocore'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


async def test_the_s3_backend_from_the_environment(tmp_path: Path) -> None:
    env = {
        "CLINAI_DATA_DIR": str(tmp_path / "data"),
        "CLINAI_BLOB_BACKEND": "s3",
        "CLINAI_S3_ENDPOINT_URL": "http://minio:9000",
        "CLINAI_S3_PUBLIC_ENDPOINT_URL": "https://files.example.org",
        "CLINAI_S3_BUCKET": "acme",
        "CLINAI_S3_REGION": "eu-west-1",
        "CLINAI_S3_PREFIX": "prod",
    }
    settings = Settings.from_env(env)
    assert (settings.s3_bucket, settings.s3_region, settings.s3_prefix) == (
        "acme",
        "eu-west-1",
        "prod",
    )
    store = open_blob_store(settings)
    assert isinstance(store, S3BlobStore) and store.bucket == "acme"
    assert not (tmp_path / "data").exists()  # no I/O: no spool folder, no connection
    await store.close()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CLINAI_S3_ENDPOINT_URL", "minio:9000"),
        ("CLINAI_S3_PUBLIC_ENDPOINT_URL", "ftp://files"),
        ("CLINAI_BLOB_BACKEND", "gcs"),
    ],
)
def test_bad_values_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name.removeprefix("CLINAI_").lower() + "|" + name):
        Settings.from_env({name: value})
