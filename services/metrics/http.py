"""The API's requests: counts and latency by method, route template and status.

The route is the template Starlette matched (`/v1/jobs/{job_id}`), never the raw path,
and a method outside the standard ones is `other`: what a client sends cannot add
series. A pure ASGI middleware: per request, two clock reads, a dict lookup and one
counter increment and histogram observation in memory."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.metrics.registry import ServiceMetrics

__all__ = ["HttpMetrics"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNMATCHED = "unmatched"
_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class _Series:
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.requests = Counter(
            "clinai_http_requests_total",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=metrics.registry,
        )
        self.duration = Histogram(
            "clinai_http_request_duration_seconds",
            "From a request's start to the end of its answer (a long poll or an event "
            "stream lasts as long as it is open), by method, route template and status.",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=metrics.registry,
        )
        self._children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(*key),
                self.duration.labels(*key),
            )
        children[0].inc()
        children[1].observe(seconds)


class HttpMetrics:
    """`Middleware(HttpMetrics, metrics=...)`, outside the others: it sees every answer."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics) -> None:
        self._app = app
        self._series = _Series(metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # raised before an answer began: the server answers 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            route = scope.get("route")
            template = getattr(route, "path", None) or _UNMATCHED
            self._series.observe(method, template, status, time.perf_counter() - began)
