"""Secrets generated once into a file (mode 0600, readable by the owner only) and shared
by the processes that read it: the blob signing key, the local stack's NATS token and
Postgres password."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["generated_secret"]


def generated_secret(path: Path, nbytes: int = 32) -> str:
    """The secret in `path`, written there first (`nbytes` random bytes as hex, mode
    0600) if the file does not exist. Safe against concurrent callers: the first
    writer wins, the others read its secret."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(nbytes))
        try:
            os.link(tmp, path)  # first writer wins; the others read its secret
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()
