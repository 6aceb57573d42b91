"""services/domain/destinations.py: where a webhook may be delivered (the SSRF policy)."""

from __future__ import annotations

import ipaddress

import pytest

from services.domain.destinations import (
    DestinationPolicy,
    DestinationRefused,
    InvalidDestination,
)


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


@pytest.mark.parametrize("url", ["http://[::1", "http://example.com:99999/", "http://h:port/"])
def test_a_url_that_cannot_be_parsed_is_invalid_not_a_crash(url: str) -> None:
    """Before, urlsplit's ValueError escaped: POST /v1/jobs with such an input_url (and a
    webhook with such a URL) answered 500."""
    with pytest.raises(InvalidDestination, match="cannot be parsed"):
        DestinationPolicy().check_url(url, "an input URL")
