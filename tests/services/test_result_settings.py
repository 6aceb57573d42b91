"""The result limits are settings, checked when they are read."""

from __future__ import annotations

import pytest

from services.settings import Settings, SettingsError


def test_result_limits_default_and_read_from_the_environment() -> None:
    defaults = Settings.from_env({})
    assert defaults.result_inline_bytes == 64 * 1024
    assert defaults.result_max_bytes == 8 * 1024 * 1024
    env = {"CLINAI_RESULT_INLINE_BYTES": "4096", "CLINAI_RESULT_MAX_BYTES": "1048576"}
    read = Settings.from_env(env)
    assert (read.result_inline_bytes, read.result_max_bytes) == (4096, 1024 * 1024)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CLINAI_RESULT_INLINE_BYTES", "10"),  # below 1 KiB
        ("CLINAI_RESULT_INLINE_BYTES", str(1024 * 1024)),  # an event would not fit
        ("CLINAI_RESULT_MAX_BYTES", str(32 * 1024 * 1024)),  # more than a worker can send
        ("CLINAI_RESULT_MAX_BYTES", "2048"),  # below the inline threshold
    ],
)
def test_unusable_result_limits_are_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})
