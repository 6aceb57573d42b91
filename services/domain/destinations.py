"""Where webhooks may go, and where inputs by URL may come from: the SSRF guard.

By default a destination that is not a global unicast address is refused: loopback,
private, link-local (169.254.169.254, the cloud metadata address, is one), shared
(100.64/10), unspecified, multicast and reserved ranges, and IPv4-mapped IPv6 forms of
them. `CLINAI_WEBHOOK_ALLOW_NETWORKS` (`CLINAI_INPUT_URL_ALLOW_NETWORKS` for inputs)
exempts CIDRs (tests, internal deployments).

The check runs at delivery time on the addresses DNS returned, inside the resolver the
HTTP connector uses: the connection goes to exactly the addresses that were checked,
so there is no window for DNS rebinding. Literal IP hosts never reach a resolver and are
checked before the request.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from events import ClinaiError

__all__ = [
    "DestinationPolicy",
    "DestinationRefused",
    "GuardedResolver",
    "InvalidDestination",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


class DestinationRefused(ClinaiError, OSError):
    """The destination resolves to an address webhooks may not reach."""

    def __init__(self, host: str, address: str, why: str) -> None:
        super().__init__(f"destination {host} refused: {address} is {why}")
        self.host = host
        self.address = address
        self.why = why


class InvalidDestination(ClinaiError, ValueError):
    """Not an http(s) URL with a host."""


class DestinationPolicy:
    """Which addresses webhooks may reach. `allow` lists exempt CIDRs."""

    def __init__(self, allow: tuple[IPNetwork, ...] = ()) -> None:
        self.allow = allow

    @classmethod
    def from_setting(
        cls, value: str, name: str = "CLINAI_WEBHOOK_ALLOW_NETWORKS"
    ) -> DestinationPolicy:
        """From the setting `name` (CLINAI_WEBHOOK_ALLOW_NETWORKS, or
        CLINAI_INPUT_URL_ALLOW_NETWORKS for inputs by URL): comma-separated CIDRs."""
        nets: list[IPNetwork] = []
        for part in value.split(","):
            if part.strip():
                try:
                    nets.append(ipaddress.ip_network(part.strip(), strict=False))
                except ValueError as err:
                    raise ValueError(f"{name}: {part.strip()!r} is not a CIDR") from err
        return cls(tuple(nets))

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` is refused, or None when it may be reached."""
        if any(address in net for net in self.allow):
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return self.refusal(address.ipv4_mapped)
        if address in _METADATA:
            return "a cloud metadata address"
        if address.is_loopback:
            return "a loopback address"
        if address.is_link_local:
            return "a link-local address"
        if address.is_private:
            return "a private address"
        if address.is_multicast or address.is_unspecified or address.is_reserved:
            return "not a unicast address"
        if not address.is_global:
            return "not a public address"
        return None

    def check_address(self, host: str, address: str) -> None:
        """Raise DestinationRefused unless `address` may be reached."""
        why = self.refusal(ipaddress.ip_address(address.split("%", 1)[0]))
        if why is not None:
            raise DestinationRefused(host, address, why)

    def check_url(self, url: str, what: str = "a webhook URL") -> str:
        """Validate an http(s) URL; refuse a literal IP host now. Returns the host."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 - raises on a port that is not a number in range
        except ValueError as err:  # an unclosed [IPv6 bracket, a bad port...
            raise InvalidDestination(
                f"{what} cannot be parsed ({err}); send a full http:// or https:// URL"
            ) from err
        if parts.scheme not in ("http", "https") or not host:
            raise InvalidDestination(f"{what} is http:// or https:// with a host")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            return host
        self.check_address(host, str(literal))
        return host


class GuardedResolver(AbstractResolver):
    """Resolves through DNS, then refuses the whole answer if any address is refused
    (a name that also points inward is not a public destination)."""

    def __init__(self, policy: DestinationPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            self._policy.check_address(host, result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()
