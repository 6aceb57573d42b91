"""One HTTP attempt: POST the signed body, bounded in time and in what is read back,
through the SSRF guard; classify the outcome."""

from __future__ import annotations

import time

import aiohttp
import msgspec

from services.domain.destinations import (
    DestinationPolicy,
    DestinationRefused,
    GuardedResolver,
    InvalidDestination,
)

__all__ = ["AttemptResult", "Sender"]

USER_AGENT = "ClinAI-Webhooks/1"


class AttemptResult(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    retryable: bool
    status_code: int | None = None
    latency_ms: float = 0.0
    error: str | None = None


class Sender:
    """`await Sender.open(...)`; `await sender.close()` at the end."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: DestinationPolicy,
        *,
        timeout_s: float,
        max_response_bytes: int,
    ) -> None:
        self._session = session
        self._policy = policy
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._max_bytes = max_response_bytes

    @classmethod
    async def open(
        cls,
        policy: DestinationPolicy,
        *,
        timeout_s: float,
        max_response_bytes: int,
        max_connections: int = 512,
    ) -> Sender:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(policy),
            use_dns_cache=False,  # every new connection resolves (and is checked) again
            limit=max_connections,
        )
        session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return cls(session, policy, timeout_s=timeout_s, max_response_bytes=max_response_bytes)

    async def close(self) -> None:
        await self._session.close()

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> AttemptResult:
        try:
            self._policy.check_url(url)
        except (DestinationRefused, InvalidDestination) as err:
            return AttemptResult(ok=False, retryable=False, error=str(err))
        started = time.perf_counter()

        def took() -> float:
            return round((time.perf_counter() - started) * 1000, 3)

        try:
            async with self._session.post(
                url,
                data=body,
                headers={**headers, "content-type": "application/json", "user-agent": USER_AGENT},
                allow_redirects=False,  # a redirect could lead past the guard
                timeout=self._timeout,
            ) as resp:
                await self._drain(resp)
                status = resp.status
        except aiohttp.ClientConnectorDNSError as err:
            if isinstance(err.os_error, DestinationRefused):
                return AttemptResult(
                    ok=False, retryable=False, latency_ms=took(), error=str(err.os_error)
                )
            return AttemptResult(
                ok=False, retryable=True, latency_ms=took(), error=f"DNS lookup failed: {err}"
            )
        except TimeoutError:
            return AttemptResult(
                ok=False,
                retryable=True,
                latency_ms=took(),
                error=f"timed out after {self._timeout_s:g} s",
            )
        except (aiohttp.ClientError, OSError) as err:
            return AttemptResult(
                ok=False, retryable=True, latency_ms=took(), error=f"connection failed: {err!r}"
            )
        latency = took()
        if 200 <= status < 300:
            return AttemptResult(ok=True, retryable=False, status_code=status, latency_ms=latency)
        return AttemptResult(
            ok=False,
            retryable=status == 429 or status >= 500,
            status_code=status,
            latency_ms=latency,
            error=f"HTTP {status}",
        )

    async def _drain(self, resp: aiohttp.ClientResponse) -> None:
        """Read at most max_response_bytes of the answer (a longer one is cut off and
        its connection not reused)."""
        left = self._max_bytes
        while left > 0:
            chunk = await resp.content.read(min(left, 16 * 1024))
            if not chunk:
                return
            left -= len(chunk)
