"""services/domain/jobs.py: requesting and cancelling jobs."""

from __future__ import annotations

import pytest

from services.domain import Commands, ConflictError, NotFoundError
from tests.domain.conftest import as_user


async def _request(commands: Commands, owner: str, job_id: str) -> int:
    return await commands.request_job(
        as_user(owner),
        job_id=job_id,
        owner=owner,
        model_id="mdl_1",
        version_id="ver_1",
        input_key=f"inputs/{job_id}/x",
        input_filename="x",
        input_size_bytes=1,
        params={},
        timeout_s=10.0,
        webhook=None,
    )


async def test_a_job_id_is_requested_once(commands: Commands) -> None:
    await _request(commands, "usr_a", "job_1")
    with pytest.raises(ConflictError, match="already exists"):
        await _request(commands, "usr_a", "job_1")


async def test_another_users_job_is_not_found_and_a_cancel_is_sent_once(
    commands: Commands,
) -> None:
    await _request(commands, "usr_a", "job_1")
    with pytest.raises(NotFoundError):
        await commands.cancel_job(as_user("usr_b"), "job_1")
    seq = await commands.cancel_job(as_user("usr_a"), "job_1")
    assert await commands.cancel_job(as_user("adm", admin=True), "job_1") == seq


async def test_an_unknown_job_is_not_found(commands: Commands) -> None:
    with pytest.raises(NotFoundError):
        await commands.cancel_job(as_user("usr_a"), "job_missing")
