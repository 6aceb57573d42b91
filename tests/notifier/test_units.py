"""The notifier's pure parts: signing, secret derivation, the SSRF policy, filters."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime

import pytest

from events import JobFailed, JobRequested, JobSucceeded, JobWebhook, ModelCreated
from services.domain.destinations import (
    DestinationPolicy,
    DestinationRefused,
    InvalidDestination,
)
from services.domain.event_types import (
    InvalidFilterError,
    check_filter,
    job_hook_wants,
    matches,
    webhook_type,
)
from services.domain.signing import derive_secret, sign, signature_header, verify
from services.notifier._dispatch import DispatchOptions, backoff_delay
from services.notifier._receivers import Facts, FactsCache, facts_of


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # From the Standard Webhooks reference libraries' tests.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_secrets_are_derived_per_webhook_and_generation() -> None:
    master = b"m" * 32
    first = derive_secret(master, "whk_a", 1)
    assert first == derive_secret(master, "whk_a", 1)
    assert first.startswith("whsec_")
    assert len({first, derive_secret(master, "whk_a", 2), derive_secret(master, "whk_b", 1)}) == 3
    assert first != derive_secret(b"n" * 32, "whk_a", 1)
    header = signature_header([first, derive_secret(master, "whk_a", 2)], "msg_1", 10, b"{}")
    assert len(header.split()) == 2
    assert verify(first, "msg_1", 10, b"{}", header)
    assert not verify(derive_secret(master, "whk_a", 3), "msg_1", 10, b"{}", header)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_inward_addresses_are_refused(address: str) -> None:
    policy = DestinationPolicy()
    assert policy.refusal(ipaddress.ip_address(address)) is not None


def test_public_addresses_and_allowlisted_networks_pass() -> None:
    policy = DestinationPolicy.from_setting("127.0.0.0/8, 10.0.0.0/8")
    for address in ("8.8.8.8", "2606:4700::1111", "127.0.0.1", "10.9.9.9"):
        assert policy.refusal(ipaddress.ip_address(address)) is None
    assert policy.refusal(ipaddress.ip_address("192.168.0.1")) is not None
    with pytest.raises(ValueError, match="not a CIDR"):
        DestinationPolicy.from_setting("nonsense")


def test_urls_are_checked_for_scheme_and_literal_hosts() -> None:
    policy = DestinationPolicy()
    assert policy.check_url("https://hooks.example.com/x") == "hooks.example.com"
    assert policy.check_url("http://localhost:9/") == "localhost"  # checked at delivery
    with pytest.raises(DestinationRefused):
        policy.check_url("http://[::ffff:10.0.0.1]/")
    with pytest.raises(InvalidDestination):
        policy.check_url("file:///etc/passwd")


def test_filters_and_types() -> None:
    assert check_filter(["job.*", " version.built "]) == ("job.*", "version.built")
    for bad in ([], ["jobs.*"], ["job.succeded"]):
        with pytest.raises(InvalidFilterError):
            check_filter(bad)
    assert matches(("job.*",), "job.succeeded") and not matches(("job.*",), "version.built")
    env = {
        "id": "e",
        "aggregate_id": "job_1",
        "occurred_at": datetime.now(UTC),
        "actor": "a",
        "correlation_id": "c",
    }
    assert webhook_type(JobSucceeded(**env)) == "job.succeeded"  # type: ignore[arg-type]
    canceled = JobFailed(**env, kind="canceled", message="m")  # type: ignore[arg-type]
    assert webhook_type(canceled) == "job.canceled"
    assert job_hook_wants(("completed",), "job.failed")
    assert job_hook_wants(("start",), "job.started")
    assert not job_hook_wants(("start",), "job.succeeded")


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    options = DispatchOptions(retry_base_s=5, retry_max_delay_s=60)
    rng = random.Random(7)
    delays = [backoff_delay(n, options, rng) for n in range(1, 8)]
    assert 2.5 <= delays[0] <= 5
    assert 5 <= delays[1] <= 10
    assert all(30 <= d <= 60 for d in delays[4:])


def _requested(webhook: JobWebhook | None) -> JobRequested:
    return JobRequested(
        id="evt_1",
        aggregate_id="job_1",
        occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
        actor="usr_1",
        correlation_id="c",
        causation_id="c",
        owner="usr_1",
        model_id="mdl_1",
        version_id="ver_1",
        input_key="inputs/job_1/x.png",
        input_filename="x.png",
        webhook=webhook,
    )


def test_facts_come_from_creating_events_only() -> None:
    hook = JobWebhook(url="https://example.com/h", events=("start",))
    assert facts_of(_requested(hook)) == Facts(
        owner="usr_1", job_webhook={"url": "https://example.com/h", "events": ("start",)}
    )
    assert facts_of(_requested(None)) == Facts(owner="usr_1")
    created = ModelCreated(
        id="evt_2",
        aggregate_id="mdl_1",
        occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
        actor="usr_1",
        correlation_id="c",
        causation_id="c",
        owner="usr_1",
        name="m",
    )
    assert facts_of(created) == Facts(owner="usr_1")
    succeeded = JobSucceeded(
        id="evt_3",
        aggregate_id="job_1",
        occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
        actor="executor",
        correlation_id="c",
        causation_id="c",
    )
    assert facts_of(succeeded) is None


def test_facts_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    cache = FactsCache(max_size=2)
    cache.put("job", "a", Facts(owner="u"))
    cache.put("job", "b", Facts(owner="v"))
    assert cache.get("job", "a") == Facts(owner="u")  # a is now the most recent
    cache.put("job", "c", Facts(owner="w"))
    assert len(cache) == 2
    assert cache.get("job", "b") is None
    assert cache.get("job", "a") is not None
    with pytest.raises(ValueError):
        FactsCache(max_size=0)
