"""Webhook subscriptions: create (the signing secret is shown once), list, get, update,
delete, rotate the secret, re-enable; deliveries with their attempts, and re-sending
one. `GET /v1/webhooks/default/secret` is the secret that signs a user's per-job
webhook URLs (see services.domain.signing)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from projections import webhook_queries
from services.api import replies
from services.api._request_digest import with_digest
from services.api.auth import Principal
from services.api.openapi_spec import LIMIT, Operation, Param, Reply, path_param
from services.api.problems import ApiError
from services.api.wiring import (
    decode_body,
    json_response,
    page_limit,
    path_id,
    projected,
    services,
)
from services.domain.access import can_see_webhook, listed_owner
from services.domain.signing import default_secret, master_key
from services.domain.views import projected_view

__all__ = ["operations", "routes"]

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Pattern = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Patterns = Annotated[list[Pattern], msgspec.Meta(min_length=1, max_length=50)]
Description = Annotated[str, msgspec.Meta(max_length=1000)]

_DELIVERY_STATUSES = frozenset({"queued", "retrying", "succeeded", "failed"})


class CreateWebhookBody(msgspec.Struct, forbid_unknown_fields=True):
    url: Url
    events: Patterns
    description: Description = ""


class UpdateWebhookBody(msgspec.Struct, forbid_unknown_fields=True):
    url: Url | None = None
    events: Patterns | None = None
    description: Description | None = None


def _view(hook: webhook_queries.WebhookView) -> replies.Webhook:
    return projected_view(hook, replies.Webhook)


async def _visible(request: Request, caller: Principal) -> webhook_queries.WebhookView:
    webhook_id = path_id(request, "webhook_id")
    hook = await webhook_queries.get_webhook(services(request).pool, webhook_id)
    if (
        hook is None
        or hook.deleted_at is not None
        or not can_see_webhook(hook.owner, caller.user_id, caller.is_admin)
    ):
        raise ApiError(
            404, "Not found", f"webhook {webhook_id} not found; list yours with GET /v1/webhooks"
        )
    return hook


async def create_webhook(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    body = await decode_body(request, CreateWebhookBody)
    ctx = with_digest(svc.context(request, caller), request, msgspec.to_builtins(body))
    issued = await svc.webhooks.create(
        ctx,
        url=body.url,
        events=body.events,
        description=body.description,
    )
    return json_response(
        replies.CreatedWebhook(
            id=issued.webhook_id,
            owner=caller.user_id,
            url=body.url,
            events=[e.strip() for e in body.events],
            description=body.description,
            enabled=True,
            generation=issued.generation,
            secret=issued.secret,
        ),
        201,
        seq=issued.seq,
    )


async def list_webhooks(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    everyone = request.query_params.get("all") == "true"
    owner = listed_owner(caller.user_id, caller.is_admin, everyone)
    hooks = await webhook_queries.list_webhooks(svc.pool, owner)
    return json_response(replies.WebhookList(items=[_view(h) for h in hooks]))


async def get_webhook(request: Request) -> Response:
    caller = await services(request).caller(request)
    return json_response(_view(await _visible(request, caller)))


async def update_webhook(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    body = await decode_body(request, UpdateWebhookBody)
    webhook_id = path_id(request, "webhook_id")
    seq = await svc.webhooks.update(
        svc.context(request, caller),
        webhook_id,
        url=body.url,
        events=body.events,
        description=body.description,
    )
    await projected(svc, seq)
    return json_response(_view(await _visible(request, caller)), 202, seq=seq)


async def delete_webhook(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    webhook_id = path_id(request, "webhook_id")
    seq = await svc.webhooks.delete(svc.context(request, caller), webhook_id)
    return json_response(replies.Accepted(id=webhook_id, status="deleted"), 202, seq=seq)


async def enable_webhook(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    webhook_id = path_id(request, "webhook_id")
    seq = await svc.webhooks.enable(svc.context(request, caller), webhook_id)
    return json_response(replies.Accepted(id=webhook_id, status="enabled"), 202, seq=seq)


async def rotate_secret(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    webhook_id = path_id(request, "webhook_id")
    issued = await svc.webhooks.rotate(svc.context(request, caller), webhook_id)
    return json_response(
        replies.RotatedSecret(
            id=webhook_id,
            secret=issued.secret,
            generation=issued.generation,
            previous_valid_until=issued.previous_valid_until,
        ),
        seq=issued.seq,
    )


async def list_deliveries(request: Request) -> Response:
    """Newest first, each with every attempt (status code, latency, error)."""
    svc = services(request)
    caller = await svc.caller(request)
    hook = await _visible(request, caller)
    status = request.query_params.get("status")
    if status is not None and status not in _DELIVERY_STATUSES:
        raise ApiError(422, "Invalid status", f"status is one of {sorted(_DELIVERY_STATUSES)}")
    deliveries = await webhook_queries.list_deliveries(
        svc.pool, hook.id, limit=page_limit(request), status=status
    )
    attempts = await webhook_queries.list_attempts(svc.pool, [d.id for d in deliveries])
    items = [
        projected_view(
            d,
            replies.Delivery,
            attempts=[projected_view(a, replies.DeliveryAttempt) for a in attempts[d.id]],
        )
        for d in deliveries
    ]
    return json_response(replies.DeliveryList(items=items))


async def redeliver(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    webhook_id = path_id(request, "webhook_id")
    delivery_id = path_id(request, "delivery_id")
    seq = await svc.webhooks.redeliver(svc.context(request, caller), webhook_id, delivery_id)
    return json_response(replies.Accepted(id=delivery_id, status="queued"), 202, seq=seq)


async def default_signing_secret(request: Request) -> Response:
    """The secret that signs deliveries to the caller's per-job webhook URLs."""
    svc = services(request)
    caller = await svc.caller(request)
    secret = default_secret(master_key(svc.settings), caller.user_id)
    return json_response(replies.SigningSecret(secret=secret))


routes = [
    Route("/v1/webhooks", create_webhook, methods=["POST"]),
    Route("/v1/webhooks", list_webhooks, methods=["GET"]),
    Route("/v1/webhooks/default/secret", default_signing_secret, methods=["GET"]),
    Route("/v1/webhooks/{webhook_id}", get_webhook, methods=["GET"]),
    Route("/v1/webhooks/{webhook_id}", update_webhook, methods=["PATCH"]),
    Route("/v1/webhooks/{webhook_id}", delete_webhook, methods=["DELETE"]),
    Route("/v1/webhooks/{webhook_id}/enable", enable_webhook, methods=["POST"]),
    Route("/v1/webhooks/{webhook_id}/rotate-secret", rotate_secret, methods=["POST"]),
    Route("/v1/webhooks/{webhook_id}/deliveries", list_deliveries, methods=["GET"]),
    Route(
        "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
        redeliver,
        methods=["POST"],
    ),
]

_WEBHOOK_ID = path_param("webhook_id", "webhook")
_TAG = "webhooks"
_ALL = Param(name="all", description="`true`: everyone's (admins)")

operations = [
    Operation(
        method="POST",
        path="/v1/webhooks",
        name="create_webhook",
        summary="Subscribe a URL to events",
        tag=_TAG,
        body=CreateWebhookBody,
        command=True,
        problems=(409,),
        replies={
            201: Reply(description="Created; the secret is shown once", type=replies.CreatedWebhook)
        },
    ),
    Operation(
        method="GET",
        path="/v1/webhooks",
        name="list_webhooks",
        summary="List webhooks",
        tag=_TAG,
        params=(_ALL,),
        replies={200: Reply(description="The webhooks", type=replies.WebhookList)},
    ),
    Operation(
        method="GET",
        path="/v1/webhooks/default/secret",
        name="default_signing_secret",
        summary="The secret that signs deliveries to the caller's per-job webhook URLs",
        tag=_TAG,
        replies={200: Reply(description="The secret", type=replies.SigningSecret)},
    ),
    Operation(
        method="GET",
        path="/v1/webhooks/{webhook_id}",
        name="get_webhook",
        summary="Get a webhook",
        tag=_TAG,
        params=(_WEBHOOK_ID,),
        replies={200: Reply(description="The webhook", type=replies.Webhook)},
    ),
    Operation(
        method="PATCH",
        path="/v1/webhooks/{webhook_id}",
        name="update_webhook",
        summary="Update a webhook's URL, events or description",
        tag=_TAG,
        params=(_WEBHOOK_ID,),
        body=UpdateWebhookBody,
        command=True,
        problems=(403, 409),
        replies={202: Reply(description="Updated", type=replies.Webhook)},
    ),
    Operation(
        method="DELETE",
        path="/v1/webhooks/{webhook_id}",
        name="delete_webhook",
        summary="Delete a webhook",
        tag=_TAG,
        params=(_WEBHOOK_ID,),
        command=True,
        problems=(403, 409),
        replies={202: Reply(description="Deleted", type=replies.Accepted)},
    ),
    Operation(
        method="POST",
        path="/v1/webhooks/{webhook_id}/enable",
        name="enable_webhook",
        summary="Re-enable a webhook disabled after failures",
        tag=_TAG,
        params=(_WEBHOOK_ID,),
        command=True,
        problems=(403, 409),
        replies={202: Reply(description="Enabled", type=replies.Accepted)},
    ),
    Operation(
        method="POST",
        path="/v1/webhooks/{webhook_id}/rotate-secret",
        name="rotate_secret",
        summary="Rotate the signing secret (the old one stays valid for a grace period)",
        tag=_TAG,
        params=(_WEBHOOK_ID,),
        command=True,
        problems=(403, 409),
        replies={200: Reply(description="The new secret, shown once", type=replies.RotatedSecret)},
    ),
    Operation(
        method="GET",
        path="/v1/webhooks/{webhook_id}/deliveries",
        name="list_deliveries",
        summary="A webhook's deliveries, newest first, each with its attempts",
        tag=_TAG,
        params=(
            _WEBHOOK_ID,
            LIMIT,
            Param(
                name="status",
                type=Literal["queued", "retrying", "succeeded", "failed"],
                description="only deliveries with this status",
            ),
        ),
        replies={200: Reply(description="The deliveries", type=replies.DeliveryList)},
    ),
    Operation(
        method="POST",
        path="/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
        name="redeliver",
        summary="Send a delivery again",
        tag=_TAG,
        params=(_WEBHOOK_ID, path_param("delivery_id", "delivery")),
        command=True,
        problems=(403, 409),
        replies={202: Reply(description="Queued", type=replies.Accepted)},
    ),
]
