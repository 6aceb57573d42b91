"""Property: no request, however malformed, gets a 5xx or leaves a traceback in the API's
log. Hypothesis sends malformed ids, query parameters, headers and bodies to every route
of the app (its routes list), with the admin's key, an unknown key and none.

Bounded and reproducible: a fixed number of examples per route, derandomized (the same
requests on every run), no example database written to the worktree: about 1,000
requests, some 20 s.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from services.api.app import create_app
from services.embedded.stack import ensure_admin_key
from services.settings import Settings
from tests.api.conftest import (
    ensure_executor_consumer,
    start_services,
    stop_services,
    wait_key_works,
    wait_ready,
)

EXAMPLES_PER_ROUTE = 25

_PARAM = re.compile(r"\{([a-z_]+)(?::[a-z]+)?\}")


class _Api(msgspec.Struct):
    url: str
    admin_key: str
    log: Path
    routes: list[tuple[str, str]]


@pytest.fixture(scope="module")
def api(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Api]:
    """A projector and an API whose stderr is kept, to look for tracebacks."""
    app_settings = Settings.from_env(stack_env)
    admin_key = asyncio.run(ensure_admin_key(app_settings)) or (
        (app_settings.data_dir / "admin.key").read_text().strip()
    )
    log = tmp_path_factory.mktemp("fuzz") / "api.log"
    asyncio.run(ensure_executor_consumer(stack_env["CLINAI_NATS_URL"]))  # /readyz needs it
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs += start_services(stack_env, ["projector", "api"], api_log=log)
        wait_ready(app_settings.api_url, procs)
        wait_key_works(app_settings.api_url, admin_key)
        app = create_app(app_settings)
        routes = [
            (method, route.path)
            for route in app.routes
            if isinstance(route, Route)
            for method in sorted(route.methods or ())
            if method != "HEAD"
        ]
        yield _Api(url=app_settings.api_url, admin_key=admin_key, log=log, routes=routes)
    finally:
        stop_services(procs)


# --- what is sent ------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=40)  # no lone surrogates
_nasty = st.one_of(
    st.sampled_from(
        [
            "*",
            ">",
            ".",
            "a.b",
            " ",
            "\r\n",
            "\x00",
            "nan",
            "inf",
            "-inf",
            "-1",
            "1e999",
            "9" * 30,
            "0x10",
            "",
            "%",
            "job_\x00",
            "ver_ok",
            "mdl_0h3k",
            "true",
            "[]",
            "{}",
        ]
    ),
    _text,
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats().map(str),
)
_ids = st.one_of(_nasty, st.from_regex(r"[a-z]{3}_[0-9a-z]{1,30}", fullmatch=True))
_param_names = st.sampled_from(
    [
        "wait",
        "after_seq",
        "limit",
        "cursor",
        "status",
        "model_id",
        "from",
        "from_seq",
        "last_event_id",
        "type",
        "aggregate",
        "id",
        "all",
        "expires",
        "signature",
        "filename",
    ]
)
_query = st.dictionaries(_param_names, _nasty, max_size=4)
_header_names = st.sampled_from(
    [
        "Idempotency-Key",
        "Last-Event-ID",
        "X-Clinai-After-Seq",
        "X-Correlation-Id",
        "Content-Type",
        "Accept",
        "Content-Length",
        "Transfer-Encoding",
        "Expect",
    ]
)
_headers = st.dictionaries(_header_names, _nasty, max_size=3)
_auth = st.sampled_from(["admin", "unknown", "none", "malformed"])
_field_names = st.sampled_from(
    ["name", "description", "visibility", "is_admin", "user_id", "url", "events", "x"]
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)
_json_bodies = st.dictionaries(_field_names, _json_values, max_size=4).map(
    lambda d: msgspec.json.encode(d)
)
_form_parts = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "input",
                "package",
                "version",
                "model",
                "params",
                "timeout_s",
                "webhook",
                "webhook_events",
                "other",
                "",
            ]
        ),
        st.booleans(),  # as a file
        _nasty,
    ),
    max_size=5,
)
_BOUNDARY = "fuzzboundary1234"


def _multipart(parts: list[tuple[str, bool, str]]) -> bytes:
    out = b""
    for name, as_file, value in parts:
        filename = b'; filename="f.bin"' if as_file else b""
        out += b'--%s\r\nContent-Disposition: form-data; name="%s"%s\r\n\r\n%s\r\n' % (
            _BOUNDARY.encode(),
            name.encode(),
            filename,
            value.encode("utf-8", "surrogatepass"),
        )
    return out + b"--%s--\r\n" % _BOUNDARY.encode()


_bodies = st.one_of(
    st.just(b""),
    _json_bodies,
    st.binary(max_size=64),
    st.sampled_from([b'{"name": "\xff\xfe"}', b"{not json", b"[]", b"null", b'"x"']),
    _form_parts.map(_multipart),
)


class _Request(msgspec.Struct):
    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


@st.composite
def _requests(draw: st.DrawFn, method: str, path: str, admin_key: str) -> _Request:
    def fill(match: re.Match[str]) -> str:
        return quote(draw(_ids), safe="")

    target = _PARAM.sub(fill, path)
    query = draw(_query)
    if query:
        target += "?" + urlencode(query, quote_via=quote)
    headers = {k: v for k, v in draw(_headers).items() if k != "Content-Length"}
    auth = draw(_auth)
    if auth == "admin":
        headers["Authorization"] = f"Bearer {admin_key}"
    elif auth == "unknown":
        headers["Authorization"] = "Bearer clinai_not-a-key"
    elif auth == "malformed":
        headers["Authorization"] = draw(_nasty)
    body = draw(_bodies) if method in ("POST", "PATCH", "DELETE") else b""
    if body.startswith(b"--" + _BOUNDARY.encode()):
        headers["Content-Type"] = f"multipart/form-data; boundary={_BOUNDARY}"
    elif body and "Content-Type" not in headers:
        headers["Content-Type"] = "application/json"
    encoded = [
        (name.encode(), value.encode("utf-8", "surrogatepass")) for name, value in headers.items()
    ]
    return _Request(method=method, target=target.encode(), headers=encoded, body=body)


# --- sending ---------------------------------------------------------------------------------


def _send(url: str, request: _Request) -> tuple[int, bytes]:
    """(status, body) of one request on its own connection; 0 when the server closed the
    connection without an answer. An event stream is not read past its head."""
    parts = urlsplit(url)
    head = [b"%s %s HTTP/1.1" % (request.method.encode(), request.target), b"Host: fuzz"]
    head += [name + b": " + value for name, value in request.headers]
    head += [b"Content-Length: %d" % len(request.body), b"Connection: close", b"", b""]
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        try:
            sock.sendall(b"\r\n".join(head) + request.body)
        except ConnectionError:
            pass  # refused mid-request: what was answered is read below
        received = b""
        while b"\r\n\r\n" not in received:
            try:
                chunk = sock.recv(65536)
            except ConnectionError:
                chunk = b""
            if not chunk:
                return (0, received) if not received else (_status(received), received)
            received += chunk
        response_head, _, body = received.partition(b"\r\n\r\n")
        if b"text/event-stream" in response_head.lower():
            return _status(response_head), b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionError:
                break
            if not chunk:
                break
            body += chunk
    return _status(response_head), body


def _status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def _acceptable(status: int, body: bytes) -> bool:
    if status < 500:
        return True
    # Asking for a sequence the log has not reached is answered 503 by design.
    return status == 503 and b"Projection behind" in body


def test_no_request_gets_a_5xx_or_a_traceback(api: _Api) -> None:
    assert len(api.routes) >= 35  # every route of the app, with each of its methods
    seen_log = 0

    def check(request: _Request) -> None:
        nonlocal seen_log
        status, body = _send(api.url, request)
        text = api.log.read_text(errors="replace")
        new, seen_log = text[seen_log:], len(text)
        assert "Traceback" not in new and "unhandled error" not in new, (request, new[-3000:])
        assert _acceptable(status, body), (request, status, body[:500])

    for method, path in api.routes:
        run = settings(
            max_examples=EXAMPLES_PER_ROUTE,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )(given(_requests(method, path, api.admin_key))(check))
        run()
