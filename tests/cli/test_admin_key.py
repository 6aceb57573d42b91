"""`clinai admin-key`: a deployment's first admin key (the admin user with it), then a
new admin key of the same user when the first is lost; each printed once, its SHA-256
the one the log records."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from events import ApiKeyIssued, EventStore, UserCreated


def _admin_key(nats_url: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "admin-key"],
        env={**os.environ, "CLINAI_NATS_URL": nats_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_admin_key_issues_the_admin_then_another_admin_key(
    nats_url: str, store: EventStore
) -> None:
    first, second = _admin_key(nats_url), _admin_key(nats_url)
    assert first != second
    assert first.startswith("clinai_") and second.startswith("clinai_")

    events = []
    async for stored in store.read_from(1):
        events.append(stored.event)
        if stored.seq == await store.stream_last_seq():
            break
    users = [e for e in events if isinstance(e, UserCreated)]
    keys = [e for e in events if isinstance(e, ApiKeyIssued)]
    assert [(u.aggregate_id, u.is_admin) for u in users] == [("usr_admin", True)]
    assert [(k.user_id, k.is_admin, k.key_hash) for k in keys] == [
        ("usr_admin", True, hashlib.sha256(secret.encode()).hexdigest())
        for secret in (first, second)
    ]
