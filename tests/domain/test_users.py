"""services/domain/users.py: users and API keys, decided from the log."""

from __future__ import annotations

import pytest

from events import EventStore
from services.domain import Commands, ForbiddenError, NotFoundError, hash_api_key
from services.domain.aggregates import fold_api_key
from tests.domain.conftest import as_user


async def test_only_an_admin_creates_users(commands: Commands) -> None:
    with pytest.raises(ForbiddenError):
        await commands.create_user(as_user("usr_a"), name="b")


async def test_a_user_and_their_first_key_are_one_batch(
    commands: Commands, store: EventStore
) -> None:
    user_id, key = await commands.create_user(as_user("adm", admin=True), name="alice")
    history = await store.read_aggregate("apikey", key.key_id)
    state = fold_api_key(history.events)
    assert state is not None and state.issued.user_id == user_id
    assert state.issued.key_hash == hash_api_key(key.secret)
    assert await store.stream_last_seq() == key.seq == 2


async def test_keys_are_issued_for_oneself_and_admin_keys_by_admins(commands: Commands) -> None:
    with pytest.raises(ForbiddenError, match="for yourself"):
        await commands.issue_api_key(as_user("usr_a"), user_id="usr_b", name="k")
    with pytest.raises(ForbiddenError, match="admin keys"):
        await commands.issue_api_key(as_user("usr_a"), user_id="usr_a", name="k", is_admin=True)
    issued = await commands.issue_api_key(as_user("usr_a"), user_id="usr_a", name="k")
    assert issued.secret.startswith("clinai_")


async def test_a_retried_issuance_issues_a_fresh_key(commands: Commands) -> None:
    ctx = as_user("usr_a", key="same")
    first = await commands.issue_api_key(ctx, user_id="usr_a", name="k")
    second = await commands.issue_api_key(ctx, user_id="usr_a", name="k")
    assert first.key_id != second.key_id and first.secret != second.secret


async def test_another_users_key_is_not_found_and_revoking_twice_is_one_revocation(
    commands: Commands,
) -> None:
    issued = await commands.issue_api_key(as_user("usr_a"), user_id="usr_a", name="k")
    with pytest.raises(NotFoundError):
        await commands.revoke_api_key(as_user("usr_b"), issued.key_id)
    seq = await commands.revoke_api_key(as_user("usr_a"), issued.key_id)
    assert await commands.revoke_api_key(as_user("adm", admin=True), issued.key_id) == seq
