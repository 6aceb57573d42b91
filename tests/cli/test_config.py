"""Where `clinai` finds the API and the key: the XDG config file, made 0600 from its
creation, and the environment over it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.cli._config import ApiConfig, config_path, load_config, save_config
from services.cli._errors import CliError


def test_the_file_is_0600_from_its_creation_and_replaced_whole(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    path = config_path(env)
    assert path == tmp_path / "xdg" / "clinai" / "config.json"
    previous = os.umask(0)  # a umask that takes nothing away: the mode is the create's
    try:
        save_config(ApiConfig(api_url="http://a:1", api_key="clinai_one"), env)
        path.chmod(0o644)  # as if someone loosened it: a new login writes a new file
        save_config(ApiConfig(api_url="http://a:1", api_key="clinai_two"), env)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no staged file left
    assert load_config(env) == ApiConfig(api_url="http://a:1", api_key="clinai_two")
    assert "clinai_two" not in repr(load_config(env))


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}  # no XDG_CONFIG_HOME: ~/.config
    save_config(ApiConfig(api_url="http://kept:1", api_key="clinai_kept"), env)
    assert (tmp_path / ".config" / "clinai" / "config.json").is_file()
    assert load_config(env).api_key == "clinai_kept"
    overridden = load_config({**env, "CLINAI_API_URL": "http://env:2/", "CLINAI_API_KEY": "k"})
    assert overridden == ApiConfig(api_url="http://env:2", api_key="k")


def test_no_key_anywhere_says_to_log_in(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert load_config(env, need_key=False).api_url == "http://127.0.0.1:8000"
    with pytest.raises(CliError, match="run `clinai login`"):
        load_config(env)
    config_path(env).parent.mkdir(parents=True)
    config_path(env).write_text("not json")
    with pytest.raises(CliError, match="is not a clinai config"):
        load_config(env)
