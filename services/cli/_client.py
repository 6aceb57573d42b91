"""The ClinAI HTTP API for the user commands, on aiohttp (the project's HTTP client).

- Every answer that is not 2xx becomes `ApiProblem` with the problem document's
  `detail`; a server that cannot be reached becomes a `CliError` naming the URL and what
  to do.
- Read-your-writes: the stream sequence each command answers (`X-Clinai-Seq`) is sent
  back on every later request (`X-Clinai-After-Seq`), so a model or version just made is
  there when asked for; a `503` for read models still behind is retried after its
  `Retry-After`.
- The key goes in the `Authorization` header to the API only: a signed output link
  (possibly S3's) is fetched without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from services.cli._config import ApiConfig
from services.cli._errors import ApiProblem, ApiUnreachable, CliError

__all__ = ["Api", "ProgressFile", "open_api"]

_RETRIES = 5  # a query answered 503 with Retry-After (read models behind, an outage)
_CHUNK = 1024 * 1024
# No bound on a whole transfer (a large upload takes what it takes), but on connecting
# and on a silence longer than any long poll (`?wait=` is at most 60 s).
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)


class _Problem(msgspec.Struct):
    title: str = ""
    detail: str = ""


class ProgressFile(io.BufferedReader):
    """A file whose reads report how many bytes went out (aiohttp streams a file part
    in chunks read from a worker thread)."""

    def __init__(self, path: Path, advance: Callable[[int], None]) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self._advance = advance

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        self._advance(len(chunk))
        return chunk


class Api:
    def __init__(self, config: ApiConfig, session: aiohttp.ClientSession) -> None:
        self.url = config.api_url
        self._auth = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = session
        self._seq = 0

    def saw(self, seq: int) -> None:
        """Later queries wait for the read models to have stream sequence `seq` (an
        event seen live, say)."""
        self._seq = max(self._seq, seq)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {**self._auth, **(extra or {})}
        if self._seq:
            headers["X-Clinai-After-Seq"] = str(self._seq)
        return headers

    @contextlib.asynccontextmanager
    async def _request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
        **kw: Any,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        answered = False
        for attempt in range(_RETRIES + 1):
            try:
                async with self._http.request(
                    method,
                    self.url + path,
                    headers=self._headers(headers),
                    timeout=timeout or _TIMEOUT,
                    **kw,
                ) as resp:
                    retry = resp.headers.get("Retry-After")
                    if resp.status == 503 and retry and method == "GET" and attempt < _RETRIES:
                        await asyncio.sleep(_pause(retry))  # as the server asks
                        continue
                    if resp.status >= 400:
                        raise await _problem(resp)
                    if seq := resp.headers.get("X-Clinai-Seq"):
                        self._seq = max(self._seq, int(seq))
                    answered = True
                    yield resp
                    return
            except aiohttp.ClientConnectionError as err:
                if answered:
                    raise CliError(f"the connection to {self.url} was lost ({err}): retry") from err
                raise unreachable(self.url, err) from err
        raise CliError(f"{self.url} stayed unavailable: retry later")  # pragma: no cover

    async def get(self, path: str, **params: str) -> Any:
        async with self._request("GET", path, params=params) as resp:
            return msgspec.json.decode(await resp.read())

    async def post(self, path: str, body: Any = None, **params: str) -> Any:
        data = msgspec.json.encode(body if body is not None else {})
        headers = {"Content-Type": "application/json"}
        async with self._request("POST", path, data=data, headers=headers, params=params) as resp:
            return msgspec.json.decode(await resp.read())

    async def post_form(self, path: str, form: aiohttp.FormData) -> Any:
        async with self._request("POST", path, data=form) as resp:
            return msgspec.json.decode(await resp.read())

    async def text(self, path: str) -> str:
        async with self._request("GET", path) as resp:
            return await resp.text()

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, headers: dict[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A long response (Server-Sent Events), read as it comes."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
        async with self._request("GET", path, headers=headers, timeout=timeout) as resp:
            yield resp

    async def download(self, url: str, dest: Path, advance: Callable[[int], None]) -> None:
        """A signed link's bytes into `dest` (no API key sent: the link is the credential)."""
        try:
            async with self._http.get(url) as resp:
                if resp.status >= 400:
                    raise await _problem(resp)
                with dest.open("wb") as out:
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        out.write(chunk)
                        advance(len(chunk))
        except aiohttp.ClientConnectionError as err:
            raise CliError(f"could not download {dest.name}: {err}") from err


def _pause(retry_after: str) -> float:
    """A `Retry-After` in seconds (an HTTP date counts as 1 s), at most 5."""
    try:
        return min(max(float(retry_after), 0.0), 5.0)
    except ValueError:
        return 1.0


def unreachable(url: str, err: BaseException) -> ApiUnreachable:
    return ApiUnreachable(
        f"could not reach the ClinAI API at {url} ({err}). Is it running? Start one here "
        "with `clinai up` (or `make up`), or point clinai at yours with "
        "`clinai login --url URL` or CLINAI_API_URL."
    )


async def _problem(resp: aiohttp.ClientResponse) -> ApiProblem:
    raw = await resp.read()
    try:
        problem = msgspec.json.decode(raw, type=_Problem)
    except msgspec.DecodeError:
        problem = _Problem(title=resp.reason or "", detail=raw.decode(errors="replace")[:500])
    detail = problem.detail
    if resp.status == 401:
        detail = f"{detail} (run `clinai login` with a valid key, or set CLINAI_API_KEY)"
    return ApiProblem(resp.status, problem.title, detail)


@contextlib.asynccontextmanager
async def open_api(config: ApiConfig) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(config, session)
