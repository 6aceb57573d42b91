"""services/domain/versions.py: version numbers allocated on the model, atomically."""

from __future__ import annotations

import asyncio

import pytest

from events import EventStore
from services.domain import Commands, ForbiddenError
from services.domain.aggregates import fold_version
from tests.domain.conftest import as_user


async def _add(commands: Commands, user: str, model_id: str, version_id: str) -> int:
    number, _ = await commands.add_version(
        as_user(user),
        model_id,
        version_id=version_id,
        package_key=f"packages/{version_id}.zip",
        package_hash="p",
        requirements_hash="r",
        size_bytes=10,
        filename="m.zip",
        has_setup=False,
    )
    return number


async def test_concurrent_uploads_take_distinct_numbers(
    commands: Commands, store: EventStore
) -> None:
    model_id, _ = await commands.create_model(
        as_user("usr_a"), name="m", description="", visibility="private"
    )
    numbers = await asyncio.gather(
        *(_add(commands, "usr_a", model_id, f"ver_{n}") for n in range(4))
    )
    assert sorted(numbers) == [1, 2, 3, 4]
    state = fold_version((await store.read_aggregate("version", "ver_0")).events)
    assert state is not None and state.uploaded.owner == "usr_a"


async def test_only_the_owner_uploads_to_a_public_model(commands: Commands) -> None:
    model_id, _ = await commands.create_model(
        as_user("usr_a"), name="m", description="", visibility="public"
    )
    with pytest.raises(ForbiddenError):
        await _add(commands, "usr_b", model_id, "ver_1")
