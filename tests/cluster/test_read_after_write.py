"""Commands right after a write through the other API process: on an R3 stream any
replica answers a read, and one may lag; an aggregate just created must never look
missing to the next command."""

from __future__ import annotations

import pytest

from tests.cluster._stack import ClusterStack

pytestmark = pytest.mark.cluster


async def test_a_model_created_on_one_api_is_found_at_once_by_the_other(
    stack: ClusterStack, figures: list[str]
) -> None:
    tries = 150
    for n in range(tries):
        write, command = stack.admin(n % 2), stack.admin(1 - n % 2)
        created = await write.post("/v1/models", json={"name": f"raw-{n}"})
        assert created.status == 201, created.body
        model_id = created.body["id"]
        # A command that reads the model's aggregate from the log (not the read models).
        updated = await command.request(
            "PATCH", f"/v1/models/{model_id}", json={"description": f"seen {n}"}
        )
        assert updated.status in (200, 202), (n, updated.body)  # never 404
    figures.append(f"{tries} models created on one API, updated at once on the other: none missing")
