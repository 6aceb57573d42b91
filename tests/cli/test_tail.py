"""`clinai tail`: golden human output, NDJSON that decodes back, and the start options."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from events import (
    ApiKeyIssued,
    BuildLogAppended,
    Event,
    EventStore,
    JobFailed,
    JobRequested,
    JobStarted,
    JobSucceeded,
    JobTimings,
    OutputFile,
    StoredEvent,
    VersionBuilt,
    WebhookDeliveryAttempted,
    decode_event,
)
from services.cli._tail_format import format_human
from services.cli.tail import TailOptions, parse_duration, tail
from services.embedded import EmbeddedNats

T0 = datetime(2025, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)


def _env(n: int, aggregate_id: str) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "aggregate_id": aggregate_id,
        "occurred_at": T0 + timedelta(seconds=n),
        "actor": "usr_a",
        "correlation_id": "c",
    }


FIXED: list[Event] = [
    ApiKeyIssued(
        **_env(1, "key_1"), user_id="usr_a", name="ci", key_hash="ff" * 32, prefix="clinai_abcdefg"
    ),
    JobRequested(
        **_env(2, "job_1"),
        owner="usr_a",
        model_id="mdl_1",
        version_id="ver_1",
        input_key="inputs/job_1/in.png",
        input_filename="in.png",
    ),
    JobStarted(**_env(3, "job_1"), worker="w7", attempt=2),
    JobSucceeded(
        **_env(4, "job_1"),
        outputs=(OutputFile(name="o.png", key="k", size_bytes=3),),
        timings=JobTimings(run_s=1.25),
    ),
    JobFailed(**_env(5, "job_2"), kind="timeout", message="took too long\nsecond line"),
    BuildLogAppended(**_env(6, "ver_1"), index=0, text="Collecting numpy\n"),
    VersionBuilt(**_env(7, "ver_1"), runtime="process", artifact="a", duration_s=12.5),
    WebhookDeliveryAttempted(
        **_env(8, "dlv_1"),
        endpoint_id="whk_1",
        attempt=1,
        outcome="retrying",
        status_code=503,
        latency_ms=12.345,
        error="HTTP 503",
    ),
]

GOLDEN = """\
2025-03-04T05:06:08.890Z        #1  ApiKeyIssued                key_1  user=usr_a name=ci prefix=clinai_abcdefg
2025-03-04T05:06:09.890Z        #2  JobRequested                job_1  owner=usr_a version=ver_1 input=in.png
2025-03-04T05:06:10.890Z        #3  JobStarted                  job_1  worker=w7 attempt=2
2025-03-04T05:06:11.890Z        #4  JobSucceeded                job_1  outputs=1 run_s=1.25
2025-03-04T05:06:12.890Z        #5  JobFailed                   job_2  kind=timeout message='took too long' attempts=1
2025-03-04T05:06:13.890Z        #6  BuildLogAppended            ver_1  index=0 text='Collecting numpy'
2025-03-04T05:06:14.890Z        #7  VersionBuilt                ver_1  runtime=process took_s=12.5
2025-03-04T05:06:15.890Z        #8  WebhookDeliveryAttempted    dlv_1  endpoint=whk_1 attempt=1 outcome=retrying status=503 ms=12.3 error='HTTP 503'
"""  # noqa: E501


@pytest.fixture
async def store(nc: NATS) -> EventStore:
    store = await EventStore.open(nc)
    for event in FIXED:
        await store.append(event, expected=None)
    return store


async def _tail(nc: NATS, **options: object) -> str:
    out = io.StringIO()
    await tail(nc, TailOptions(**options), out)
    return out.getvalue()


async def test_golden_human_output(nc: NATS, store: EventStore) -> None:
    assert await _tail(nc, from_seq=1) == GOLDEN


async def test_colour_only_adds_escapes() -> None:
    plain = format_human(StoredEvent(5, FIXED[4]))
    coloured = format_human(StoredEvent(5, FIXED[4]), colour=True)
    assert "\x1b[31m" in coloured  # failures are red
    stripped = coloured
    for code in ("\x1b[0m", "\x1b[2m", "\x1b[31m"):
        stripped = stripped.replace(code, "")
    assert stripped == plain


async def test_json_round_trips_through_decode_event(nc: NATS, store: EventStore) -> None:
    lines = (await _tail(nc, from_seq=1, json=True)).splitlines()
    decoded = [decode_event(line.encode()) for line in lines]
    assert decoded == FIXED
    assert [msgspec.json.decode(line)["seq"] for line in lines] == list(range(1, 9))


async def test_filters_and_from_seq(nc: NATS, store: EventStore) -> None:
    assert (await _tail(nc, from_seq=7)).splitlines() == GOLDEN.splitlines()[6:]
    job = (await _tail(nc, aggregate="job", resource_id="job_1")).splitlines()
    assert [line.split()[1] for line in job] == ["#2", "#3", "#4"]
    assert [line.split()[1] for line in (await _tail(nc, type_glob="Job*")).splitlines()] == [
        "#2",
        "#3",
        "#4",
        "#5",
    ]
    assert (await _tail(nc, type_glob="VersionBuilt")).split()[1] == "#7"
    assert await _tail(nc, from_seq=99) == ""


async def test_since_starts_at_the_right_event(nc: NATS, store: EventStore) -> None:
    cut = datetime.now(UTC)
    later = [JobStarted(**_env(20 + n, "job_9"), attempt=n) for n in (1, 2)]
    seqs = [await store.append(e, expected=None) for e in later]
    out = io.StringIO()
    clock = lambda: cut + timedelta(minutes=10)  # noqa: E731
    await tail(nc, TailOptions(since=parse_duration("10m")), out, clock=clock)
    assert [line.split()[1] for line in out.getvalue().splitlines()] == [f"#{s}" for s in seqs]
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1d") == timedelta(days=1)
    with pytest.raises(ValueError):
        parse_duration("10 minutes")


async def _seed(url: str) -> None:
    """The log of the NATS server at `url` holds FIXED[1]."""
    client = await nats.connect(url)
    try:
        await (await EventStore.open(client)).append(FIXED[1], expected=None)
    finally:
        await client.drain()


def test_the_cli_prints_ndjson(nats_url: str) -> None:
    asyncio.run(_seed(nats_url))
    env = {**os.environ, "CLINAI_NATS_URL": nats_url}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "tail", "--from-seq", "1", "--json"],
        env=env,
        capture_output=True,
        timeout=30,
        check=True,
    )
    [line] = done.stdout.decode().splitlines()
    assert decode_event(line.encode()) == FIXED[1]
    bad = subprocess.run(
        [sys.executable, "-m", "services.cli", "tail", "--id", "a.b"],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert bad.returncode == 2 and b"--id" in bad.stderr


def test_the_cli_finds_the_local_stacks_nats_by_itself(tmp_path: Path) -> None:
    """As the README shows it, after `clinai up` (or `make up`): no CLINAI_NATS_URL."""
    data_dir = tmp_path / "stack"
    server = EmbeddedNats(data_dir / "nats")  # where `clinai up` runs it
    url = server.start_blocking()
    try:
        asyncio.run(_seed(url))
        env = {k: v for k, v in os.environ.items() if k != "CLINAI_NATS_URL"}
        in_folder = subprocess.run(
            [sys.executable, "-m", "services.cli", "tail", "--json"],
            env={**env, "CLINAI_DATA_DIR": str(data_dir)},
            capture_output=True,
            timeout=30,
        )
        assert in_folder.returncode == 0, in_folder.stderr
        [line] = in_folder.stdout.decode().splitlines()
        assert decode_event(line.encode()) == FIXED[1]
        by_option = subprocess.run(
            [sys.executable, "-m", "services.cli", "tail", "--json", "--data-dir", str(data_dir)],
            env=env,
            capture_output=True,
            timeout=30,
            cwd=tmp_path,
        )
        assert by_option.returncode == 0, by_option.stderr
        assert by_option.stdout == in_folder.stdout
    finally:
        server.stop_blocking()
    stopped = subprocess.run(
        [sys.executable, "-m", "services.cli", "tail"],
        env={**env, "CLINAI_DATA_DIR": str(data_dir)},
        capture_output=True,
        timeout=30,
    )
    assert stopped.returncode == 2
    message = stopped.stderr.decode()
    assert "no local stack runs on" in message and str(data_dir) in message
    assert "clinai up" in message and "CLINAI_NATS_URL=nats://" in message
