"""A job's inputs from the command line: `name=value` and `name=@file`, each value
read as the version's schema (its JSON Schema, `GET /v1/versions/{id}/schema`) says:
`threshold=0.3` is a float for a float input, `tags=a,b` (or `tags='["a","b"]'`) a list,
`mask=null` nothing for an optional one. A version in the `run(input_path, output_dir)`
form takes `input=@file` and free `params` (`key=value`, JSON where it parses).

The bounds are the server's to check (or, for `clinai predict`, the same check run
here, `CompiledInputs.resolve`): this module only reads the words."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import orjson

from services.cli._errors import CliError

__all__ = ["GivenInputs", "form_value", "parse_inputs"]

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class GivenInputs(msgspec.Struct, kw_only=True):
    values: dict[str, Any]  # typed: the inputs; legacy: the params
    files: dict[str, list[Path]]  # input name -> files, in order
    legacy: bool = False


def parse_inputs(schema: dict[str, Any], words: Sequence[str]) -> GivenInputs:
    legacy = schema.get("x-clinai-form") == "legacy"
    props: dict[str, Any] = schema.get("properties", {})
    given = GivenInputs(values={}, files={}, legacy=legacy)
    for word in words:
        name, equals, raw = word.partition("=")
        if not equals or not name:
            raise CliError(f"{word!r} is not an input: write name=value, or name=@file for a file")
        prop = props.get(name)
        if legacy:
            if name == "input":
                given.files.setdefault(name, []).append(_file(name, raw))
            else:
                given.values[name] = _json_or_text(raw)
            continue
        if prop is None:
            known = ", ".join(props) or "none"
            raise CliError(f"{name!r} is not an input of this version; its inputs are: {known}")
        if prop.get("x-clinai-file"):
            given.files.setdefault(name, []).append(_file(name, raw))
            continue
        if raw.startswith("@"):
            raise CliError(f"input {name!r} is not a file: give its value as {name}=VALUE")
        given.values[name] = _value(name, raw, prop)
    return given


def form_value(value: Any) -> str:
    """A value as a multipart form field: a string as it is, anything else as JSON
    (what the API reads)."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _file(name: str, raw: str) -> Path:
    if not raw.startswith("@"):
        raise CliError(f"input {name!r} is a file: write {name}=@PATH")
    path = Path(raw[1:]).expanduser()
    if not path.is_file():
        raise CliError(f"input {name!r}: {path} is not a file")
    return path


def _value(name: str, raw: str, prop: dict[str, Any]) -> Any:
    options = prop.get("anyOf", [prop])
    if raw.lower() in ("null", "none") and any(o.get("type") == "null" for o in options):
        return None
    for option in options:
        if option.get("type") == "null":
            continue
        try:
            return _one(raw, option)
        except ValueError:
            continue
    raise CliError(f"input {name!r}: {raw!r} is not {_expected(options)}")


def _one(raw: str, option: dict[str, Any]) -> Any:
    if "enum" in option:
        for choice in option["enum"]:
            if str(choice) == raw or (isinstance(choice, bool) and raw.lower() == str(choice)):
                return choice
        raise ValueError(raw)
    kind = option.get("type")
    if kind == "string":
        return raw
    if kind == "integer":
        return int(raw)
    if kind == "number":
        return float(raw)
    if kind == "boolean":
        if raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise ValueError(raw)
    if kind == "array":
        items = option.get("items", {})
        if raw.lstrip().startswith("["):
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError as err:
                raise ValueError(raw) from err
            words = [w if isinstance(w, str) else orjson.dumps(w).decode() for w in parsed]
        else:
            words = [w.strip() for w in raw.split(",")] if raw else []
        return [_one(w, items) for w in words]
    return _json_or_text(raw)


def _expected(options: list[dict[str, Any]]) -> str:
    names = {"string": "a string", "integer": "an integer", "number": "a number"}
    names |= {"boolean": "true or false", "array": "a list (a,b or JSON)"}
    out = []
    for option in options:
        if "enum" in option:
            out.append("one of " + ", ".join(str(c) for c in option["enum"]))
        elif option.get("type") == "null":
            out.append("null")
        else:
            out.append(names.get(str(option.get("type")), "a JSON value"))
    return " or ".join(out)


def _json_or_text(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
