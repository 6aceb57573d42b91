"""moto's S3 app served by uvicorn (`python -m uvicorn --factory --interface wsgi
bench._moto_app:app`): connections kept alive between requests, as S3 and MinIO keep
them. moto's own server (werkzeug's development server) closes every connection after
one request, so each request a client sends on it costs a new TCP connection."""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def app() -> Any:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    return DomainDispatcherApplication(create_backend_app)
