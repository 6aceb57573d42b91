"""Where `clinai` finds the API and the key: the user's config file
(`$XDG_CONFIG_HOME/clinai/config.json`, else `~/.config/clinai/config.json`, written by
`clinai login` with mode 0600), with `CLINAI_API_URL` and `CLINAI_API_KEY` overriding it.

The file is created with mode 0600 from the start (a new file beside it, then renamed
over it), never chmod-ed after the key is in it; its folder is made 0700."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import msgspec

from services.cli._errors import CliError

__all__ = ["DEFAULT_API_URL", "ApiConfig", "config_path", "load_config", "save_config"]

DEFAULT_API_URL = "http://127.0.0.1:8000"  # where `clinai up` serves by default


class ApiConfig(msgspec.Struct, frozen=True, kw_only=True):
    api_url: str
    api_key: str = ""

    def __repr__(self) -> str:  # the key never shows up in a traceback or a log line
        return f"ApiConfig(api_url={self.api_url!r}, api_key={'***' if self.api_key else ''!r})"


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "clinai" / "config.json"


def _stored(path: Path) -> ApiConfig | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise CliError(f"cannot read {path}: {err.strerror}") from err
    try:
        return msgspec.json.decode(raw, type=ApiConfig)
    except msgspec.DecodeError as err:
        raise CliError(f"{path} is not a clinai config ({err}): run `clinai login` again") from err


def load_config(env: Mapping[str, str] | None = None, *, need_key: bool = True) -> ApiConfig:
    """The stored config with the environment's overrides."""
    env = os.environ if env is None else env
    stored = _stored(config_path(env))
    url = env.get("CLINAI_API_URL") or (stored.api_url if stored else "") or DEFAULT_API_URL
    key = env.get("CLINAI_API_KEY") or (stored.api_key if stored else "")
    if need_key and not key:
        raise CliError(
            "no API key: run `clinai login` (it asks for the key and keeps it in "
            f"{config_path(env)}), or set CLINAI_API_KEY"
        )
    return ApiConfig(api_url=url.rstrip("/"), api_key=key)


def save_config(config: ApiConfig, env: Mapping[str, str] | None = None) -> Path:
    """Write the config atomically, readable by the user only."""
    path = config_path(env)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(msgspec.json.encode(config))
            out.flush()
            os.fsync(out.fileno())
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return path
