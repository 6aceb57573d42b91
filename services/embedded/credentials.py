"""The credentials of the local stack's NATS and Postgres: generated once per data
folder by `clinai up`, beside `admin.key`, in files only their owner can read (0600):
`nats.token` (every NATS client presents it) and `postgres.password` (the `postgres`
role's). Commands that find the local stack through the data folder (`clinai tail`)
read them from there."""

from __future__ import annotations

from pathlib import Path

import msgspec

from services.infra.secret_files import generated_secret

__all__ = ["NATS_TOKEN_FILE", "POSTGRES_PASSWORD_FILE", "LocalCredentials", "local_nats_token"]

NATS_TOKEN_FILE = "nats.token"
POSTGRES_PASSWORD_FILE = "postgres.password"


class LocalCredentials(msgspec.Struct, frozen=True, kw_only=True):
    nats_token: str
    postgres_password: str

    @classmethod
    def of(cls, data_dir: Path) -> LocalCredentials:
        """The data folder's credentials, generated on first use (also in a folder made
        before `clinai up` had them: the servers take them at their next start)."""
        return cls(
            nats_token=generated_secret(data_dir / NATS_TOKEN_FILE),
            postgres_password=generated_secret(data_dir / POSTGRES_PASSWORD_FILE),
        )


def local_nats_token(data_dir: Path) -> str | None:
    """The local stack's NATS token, None if this data folder has none (yet)."""
    try:
        return (data_dir / NATS_TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None
