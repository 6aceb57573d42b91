"""A version's `InputSchema` compiled once into msgspec types: the JSON Schema served
for it, the check of a job's inputs (defaults applied) and of a declared result.

Build one `CompiledInputs` per version and keep it (`SchemaCache`): checking a job's
inputs is then one `msgspec.convert` of a small dict.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Annotated, Any, Literal

import msgspec

from events import ClinaiError, InputParam, InputSchema, OutputField

__all__ = [
    "FILE_HELP",
    "CompiledInputs",
    "InputsInvalidError",
    "SchemaCache",
    "describe",
    "param_type",
]

FILE_HELP = (
    "a file: a multipart part named after the input, or in a JSON body an upload id "
    "(POST /v1/uploads) or an http(s) URL"
)
_BASE: dict[str, type] = {"file": str, "str": str, "int": int, "float": float, "bool": bool}
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_FIELD = re.compile(r"`(?P<name>[^`]+)`")


class InputsInvalidError(ClinaiError):
    """A job's inputs do not fit the version's schema: `field` names the input,
    `expected` what it takes and `got` what came (JSON text, shortened)."""

    def __init__(self, message: str, *, field: str, expected: str, got: str | None) -> None:
        super().__init__(message, hint=f"GET the version's /schema for its inputs; {FILE_HELP}")
        self.field = field
        self.expected = expected
        self.got = got


def _item_type(kind: str, choices: tuple[Any, ...] | None, meta: dict[str, Any]) -> Any:
    if choices is not None:
        return Literal.__getitem__(choices)
    base: Any = _BASE[kind]
    if kind == "file":
        return Annotated[str, msgspec.Meta(extra_json_schema={"format": "binary"})]
    return Annotated[base, msgspec.Meta(**meta)] if meta else base


def _bounds(p: InputParam) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key in ("ge", "gt", "le", "lt"):
        value = getattr(p, key)
        if value is not None:
            meta[key] = int(value) if p.kind == "int" and float(value).is_integer() else value
    return meta


def _lengths(p: InputParam) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key in ("min_length", "max_length"):
        if getattr(p, key) is not None:
            meta[key] = getattr(p, key)
    if p.pattern is not None:
        meta["pattern"] = p.pattern
    return meta


def param_type(p: InputParam) -> Any:
    """The msgspec type of one input (constraints included)."""
    if p.many:
        item = _item_type(p.kind, p.choices, _bounds(p))
        lengths = _lengths(p)
        t: Any = list[item]  # type: ignore[valid-type]
        if lengths:
            t = Annotated[t, msgspec.Meta(**lengths)]
    else:
        t = _item_type(p.kind, p.choices, {**_bounds(p), **_lengths(p)})
    if p.nullable:
        t = t | None
    return t


def _output_type(f: OutputField) -> Any:
    t: Any = _item_type(f.kind, f.choices, {})
    if f.many:
        t = list[t]
    return t | None if f.nullable else t


def describe(p: InputParam | OutputField) -> str:
    """What an input takes, in words: "a float >= 0 and <= 1", "one of 'a', 'b'"."""
    if p.choices is not None:
        what = "one of " + ", ".join(repr(c) for c in p.choices)
    elif p.kind == "file":
        what = "a file"
    else:
        what = {
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
        }[p.kind]
    if isinstance(p, InputParam):
        signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
        limits = [f"{signs[k]} {getattr(p, k):g}" for k in signs if getattr(p, k) is not None]
        if p.pattern is not None and not p.many:
            limits.append(f"matching /{p.pattern}/")
        if limits:
            what += " " + " and ".join(limits)
    if p.many:
        what = f"a list of ({what})"
    if isinstance(p, InputParam) and (p.min_length is not None or p.max_length is not None):
        low, high = p.min_length or 0, p.max_length
        what += f", length {low}..{'' if high is None else high}"
    return f"{what}, or null" if p.nullable else what


def _shown(value: Any) -> str:
    text = msgspec.json.encode(value).decode() if _encodable(value) else repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _encodable(value: Any) -> bool:
    try:
        msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError):
        return False
    return True


class CompiledInputs:
    """One version's schema as msgspec types, built once."""

    def __init__(self, schema: InputSchema) -> None:
        self.schema = schema
        self.params = {p.name: p for p in schema.params}
        self.file_params = tuple(p for p in schema.params if p.kind == "file")
        fields: list[Any] = []
        for p in schema.params:
            t = (
                Annotated[param_type(p), msgspec.Meta(description=p.description)]
                if (p.description)
                else param_type(p)
            )
            if p.required:
                fields.append((p.name, t))
            elif isinstance(p.default, list):
                fields.append((p.name, t, msgspec.field(default_factory=list(p.default).copy)))
            else:
                fields.append((p.name, t, p.default))
        self._type = msgspec.defstruct(
            "Inputs", fields, kw_only=True, forbid_unknown_fields=True, frozen=True
        )
        self._output: Any = None
        if schema.output is not None:
            self._output = msgspec.defstruct(
                schema.output_name or "Result",
                [
                    (f.name, _output_type(f)) if f.required else (f.name, _output_type(f), None)
                    for f in schema.output
                ],
                kw_only=True,
                forbid_unknown_fields=True,
            )

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        """Every input, checked, defaults applied; raises `InputsInvalidError`."""
        try:
            checked = msgspec.convert(given, type=self._type, strict=True)
        except msgspec.ValidationError as err:
            raise self._invalid(str(err), given) from err
        return msgspec.structs.asdict(checked)

    def _invalid(self, text: str, given: dict[str, Any]) -> InputsInvalidError:
        match = _AT.match(text)
        msg, path = (match["msg"], match["path"] or "") if match else (text, "")
        named = _FIELD.search(msg)
        if msg.startswith("Object contains unknown field") and named:
            name = named["name"]
            known = ", ".join(self.params) or "(none)"
            return InputsInvalidError(
                f"{name!r} is not an input of this version; its inputs are: {known}",
                field=name,
                expected="no such input",
                got=_shown(given.get(name)),
            )
        if msg.startswith("Object missing required field") and named:
            required = self.params[named["name"]]
            expected = describe(required)
            return InputsInvalidError(
                f"input {required.name!r} is required: expected {expected}",
                field=required.name,
                expected=expected,
                got=None,
            )
        name = re.split(r"[.\[]", path.lstrip("."), maxsplit=1)[0]
        p = self.params.get(name)
        if p is None:  # not one field's fault (e.g. not an object at all)
            return InputsInvalidError(
                f"the inputs must be an object of {', '.join(self.params)}: {msg}",
                field="",
                expected="an object",
                got=None,
            )
        got = _shown(_at_path(given, path))
        expected = describe(p)
        where = path.lstrip(".")
        return InputsInvalidError(
            f"input {where!r}: expected {expected}, got {got}",
            field=p.name,
            expected=expected,
            got=got,
        )

    def json_schema(self) -> dict[str, Any]:
        """The inputs as a JSON Schema (2020-12); a declared result under
        `x-clinai-output`."""
        out = _inline(msgspec.json.schema(self._type))
        out.pop("title", None)
        for p in self.file_params:
            prop = out["properties"][p.name]
            target = prop.get("items", prop)
            target.setdefault("description", FILE_HELP)
            prop["x-clinai-file"] = True
        document: dict[str, Any] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Inputs",
            **out,
        }
        if self._output is not None:
            result = _inline(msgspec.json.schema(self._output))
            document["x-clinai-output"] = result
        return document

    def check_output(self, result: Any, output_names: frozenset[str]) -> str | None:
        """Why `result` does not match the declared result, or None (also when none is
        declared). A `file` field must name a file the model wrote."""
        if self._output is None or self.schema.output is None:
            return None
        name = self.schema.output_name
        try:
            msgspec.convert(result, type=self._output, strict=True)
        except msgspec.ValidationError as err:
            return f"run() returned a result that does not match its declared {name}: {err}"
        for f in self.schema.output:
            if f.kind != "file" or not isinstance(result, dict):
                continue
            value = result.get(f.name)
            for item in value if isinstance(value, list) else [value]:
                if item is not None and item not in output_names:
                    return (
                        f"run() returned {f.name}={item!r}, declared a file in {name}, but "
                        "wrote no such file into output_dir"
                    )
        return None


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """The one struct's definition out of msgspec's `$ref`/`$defs` form."""
    defs = schema.get("$defs", {})
    ref = schema.get("$ref", "")
    return dict(defs.get(ref.rsplit("/", 1)[-1], schema))


def _at_path(value: Any, path: str) -> Any:
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        key, index = part
        try:
            value = value[key] if key else value[int(index)]
        except (KeyError, IndexError, TypeError):
            return None
    return value


class SchemaCache:
    """Compiled schemas by version id (a version's schema never changes), at most
    `size` of them, the least recently used dropped first."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._items: OrderedDict[str, CompiledInputs] = OrderedDict()

    def get(self, version_id: str, schema: InputSchema) -> CompiledInputs:
        found = self._items.get(version_id)
        if found is not None:
            self._items.move_to_end(version_id)
            return found
        compiled = CompiledInputs(schema)
        self._items[version_id] = compiled
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return compiled
