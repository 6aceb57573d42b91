"""services/domain/models.py: models and their per-owner unique names."""

from __future__ import annotations

import pytest

from services.domain import Commands, ConflictError, ForbiddenError, NotFoundError
from tests.domain.conftest import as_user


async def _model(commands: Commands, owner: str, name: str, visibility: str = "private") -> str:
    model_id, _ = await commands.create_model(
        as_user(owner), name=name, description="", visibility=visibility
    )
    return model_id


async def test_a_name_is_unique_per_owner_whatever_its_case(commands: Commands) -> None:
    await _model(commands, "usr_a", "Resnet")
    with pytest.raises(ConflictError, match="already have a model named"):
        await _model(commands, "usr_a", "resnet")
    await _model(commands, "usr_b", "resnet")  # another owner's namespace


async def test_a_retried_create_under_one_key_is_one_model(commands: Commands) -> None:
    ctx = as_user("usr_a", key="k1")
    first = await commands.create_model(ctx, name="m", description="", visibility="private")
    again = await commands.create_model(ctx, name="m", description="", visibility="private")
    assert again == first


async def test_a_private_model_is_not_found_by_others(commands: Commands) -> None:
    model_id = await _model(commands, "usr_a", "m")
    with pytest.raises(NotFoundError):
        await commands.load_model(as_user("usr_b"), model_id, write=False)
    state = await commands.load_model(as_user("adm", admin=True), model_id, write=True)
    assert state.owner == "usr_a"


async def test_a_public_model_is_read_by_others_but_changed_by_its_owner(
    commands: Commands,
) -> None:
    model_id = await _model(commands, "usr_a", "m", visibility="public")
    await commands.load_model(as_user("usr_b"), model_id, write=False)
    with pytest.raises(ForbiddenError, match=r"only\s+its owner"):
        await commands.update_model(
            as_user("usr_b"), model_id, name=None, description="x", visibility=None
        )


async def test_renaming_and_deleting_release_the_name(commands: Commands) -> None:
    model_id = await _model(commands, "usr_a", "old")
    await commands.update_model(
        as_user("usr_a"), model_id, name="new", description=None, visibility=None
    )
    await _model(commands, "usr_a", "old")  # free again
    with pytest.raises(ConflictError):
        await _model(commands, "usr_a", "new")
    await commands.delete_model(as_user("usr_a"), model_id)
    await _model(commands, "usr_a", "new")
    with pytest.raises(NotFoundError):
        await commands.load_model(as_user("usr_a"), model_id, write=False)
