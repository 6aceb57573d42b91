"""Settings read from the environment: the setup limit."""

from __future__ import annotations

import pytest

from services.settings import Settings, SettingsError


def test_setup_timeout_is_read_and_must_be_positive() -> None:
    assert Settings.from_env({}).setup_timeout_s == 120.0
    assert Settings.from_env({"CLINAI_SETUP_TIMEOUT_S": "7.5"}).setup_timeout_s == 7.5
    with pytest.raises(SettingsError, match="CLINAI_SETUP_TIMEOUT_S must be positive"):
        Settings.from_env({"CLINAI_SETUP_TIMEOUT_S": "0"})
