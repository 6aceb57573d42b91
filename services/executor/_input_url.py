"""Inputs by URL: the executor fetches a job's `input_url` into the attempt's folder,
through the webhooks' address guard (`services.domain.destinations`: the addresses DNS
gives are checked in the connector's resolver, each redirect's URL before it is
followed), within a size cap and a time limit. Any failure is `InputUnavailableError`,
which fails the job with kind `input_unavailable`; an error of this host's disk is an
`OSError`, an infrastructure failure that is retried."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp

from events import ClinaiError
from services.domain.destinations import (
    DestinationPolicy,
    DestinationRefused,
    GuardedResolver,
    InvalidDestination,
)
from services.settings import Settings

__all__ = ["InputUnavailableError", "UrlInputs"]

_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1024 * 1024
_USER_AGENT = "ClinAI-Inputs/1"


class InputUnavailableError(ClinaiError):
    """A job's input could not be fetched from its URL; the message says why."""


class UrlInputs:
    """How this executor fetches inputs by URL: which addresses it may reach (`policy`),
    at most `max_bytes`, within `timeout_s` in all (redirects included)."""

    def __init__(
        self,
        policy: DestinationPolicy,
        *,
        max_bytes: int,
        timeout_s: float,
    ) -> None:
        self.policy = policy
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> UrlInputs:
        """From the settings (the defaults when None)."""
        settings = settings or Settings()
        policy = DestinationPolicy.from_setting(
            settings.input_url_allow_networks, "CLINAI_INPUT_URL_ALLOW_NETWORKS"
        )
        timeout_s = settings.input_url_timeout_s
        return cls(policy, max_bytes=settings.max_input_bytes, timeout_s=timeout_s)

    async def fetch(self, url: str, path: Path) -> int:
        """Write the body at `url` to `path` (its folder is made); the size. Nothing is
        left at `path` when it fails."""
        host = urlsplit(url).hostname or url
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._fetch(url, path)
        except InputUnavailableError:
            raise
        except TimeoutError as err:
            raise InputUnavailableError(
                f"fetching the input from {host} took longer than {self.timeout_s:g} s "
                "(CLINAI_INPUT_URL_TIMEOUT_S)",
                hint="serve it faster, or upload the file instead (POST /v1/uploads)",
            ) from err
        except (DestinationRefused, InvalidDestination) as err:
            raise _refused(err) from err
        except aiohttp.ClientConnectorError as err:
            if isinstance(err.os_error, DestinationRefused):
                raise _refused(err.os_error) from err
            raise _unreachable(host, err) from err
        except aiohttp.ClientError as err:
            raise _unreachable(host, err) from err
        # Any other OSError is this host's (writing the file): an infrastructure failure.

    async def _fetch(self, url: str, path: Path) -> int:
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.policy), use_dns_cache=False)
        headers = {"User-Agent": _USER_AGENT}
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            for _ in range(_MAX_REDIRECTS + 1):
                self.policy.check_url(url, "an input URL")  # a literal address: checked now
                async with session.get(url, allow_redirects=False, headers=headers) as resp:
                    if resp.status in _REDIRECTS and "Location" in resp.headers:
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    if resp.status != 200:
                        raise InputUnavailableError(
                            f"the input URL answered HTTP {resp.status}",
                            hint="check that the URL is right and still valid",
                        )
                    if resp.content_length is not None and resp.content_length > self.max_bytes:
                        raise self._too_large()
                    return await self._write(resp, path)
        raise InputUnavailableError(
            f"the input URL redirected more than {_MAX_REDIRECTS} times",
            hint="give the URL the redirects end at",
        )

    async def _write(self, resp: aiohttp.ClientResponse, path: Path) -> int:
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        fh = await asyncio.to_thread(path.open, "wb")
        size = 0
        try:
            async for chunk in resp.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > self.max_bytes:
                    raise self._too_large()
                await asyncio.to_thread(fh.write, chunk)
        except BaseException:
            await asyncio.to_thread(fh.close)
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise
        await asyncio.to_thread(fh.close)
        return size

    def _too_large(self) -> InputUnavailableError:
        return InputUnavailableError(
            f"the input at the URL is larger than the input limit of {self.max_bytes} bytes "
            "(CLINAI_MAX_INPUT_BYTES)",
            hint="send a smaller file or ask the operator to raise the limit",
        )


def _refused(err: DestinationRefused | InvalidDestination) -> InputUnavailableError:
    return InputUnavailableError(
        f"the input URL was refused: {err}",
        hint="inputs by URL come from public addresses only; upload the file instead",
    )


def _unreachable(host: str, err: BaseException) -> InputUnavailableError:
    return InputUnavailableError(
        f"could not fetch the input from {host}: {err or type(err).__name__}",
        hint="check that the URL is reachable from the executor",
    )
