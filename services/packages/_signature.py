"""`run`'s typed signature read from predict.py's syntax tree (never by importing it),
as an `InputSchema`; the way Cog reads its schema statically.

The legacy form `run(input_path, output_dir[, params])` (or any `run` whose parameters
carry no annotation) has no schema. Every other `run` declares its inputs: each
parameter has a supported annotation and, optionally, a literal default. A parameter
named `output_dir` receives the job's output folder and is not an input. What the
reader cannot read fails the upload with a message naming the parameter.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import msgspec

from events import ClinaiError, InputParam, InputSchema, OutputField
from services.packages._zipcheck import PackageInvalidError

__all__ = ["SUPPORTED", "read_schema"]

SUPPORTED = (
    "Supported annotations: File (from runner), str, int, float, bool, Literal[...] of "
    "str or int values, list[...] of these, X | None or Optional[X]; each may be wrapped as "
    "Annotated[T, Input(description=, ge=, gt=, le=, lt=, min_length=, max_length=, "
    "pattern=)]; defaults must be literals. A parameter named output_dir receives the "
    "output folder."
)
_SCALARS = {"str": "str", "int": "int", "float": "float", "bool": "bool"}
_FILES = frozenset({"File", "Path", "PosixPath"})
_LISTS = frozenset({"list", "List", "Sequence"})
_INPUT_KEYS = frozenset(
    {"description", "ge", "gt", "le", "lt", "min_length", "max_length", "pattern"}
)
_BOUNDS = ("ge", "gt", "le", "lt")
_LENGTHS = ("min_length", "max_length")
_ANY_RESULT = frozenset({"dict", "Dict", "Any", "Mapping"})


class _Unreadable(ClinaiError):
    """What is wrong with one annotation or default (the caller names the parameter and
    gives the hint: what is supported)."""


class _Type(msgspec.Struct, kw_only=True):
    kind: str = ""
    many: bool = False
    nullable: bool = False
    is_none: bool = False
    choices: tuple[Any, ...] | None = None
    meta: dict[str, Any] = {}


def read_schema(run: ast.FunctionDef, module: ast.Module) -> InputSchema | None:
    """The schema of a typed `run`, or None for the legacy form. Raises
    `PackageInvalidError` naming the first parameter that cannot be read."""
    args = run.args
    positional = [*args.posonlyargs, *args.args]
    every = [*positional, *args.kwonlyargs]
    names = [a.arg for a in positional[:2]]
    if names == ["input_path", "output_dir"] or all(a.annotation is None for a in every):
        return None
    if args.vararg is not None or args.kwarg is not None:
        star = args.vararg or args.kwarg
        raise _error(run, f"run's *{star.arg if star else ''} cannot be read as an input", star)
    if args.posonlyargs:
        raise _error(run, "run's inputs are passed by name: remove the '/'", args.posonlyargs[0])
    defaults: dict[str, ast.expr] = {}
    for arg, default in zip(reversed(args.args), reversed(args.defaults), strict=False):
        defaults[arg.arg] = default
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if kw_default is not None:
            defaults[arg.arg] = kw_default
    params: list[InputParam] = []
    takes_output_dir = False
    for arg in every:
        if arg.arg == "output_dir":
            takes_output_dir = True
            continue
        try:
            params.append(_param(arg, defaults.get(arg.arg)))
        except _Unreadable as err:
            raise _error(run, f"run's parameter {arg.arg!r}: {err}", arg) from err
    output, output_name = _output(run, module)
    return InputSchema(
        params=tuple(params),
        takes_output_dir=takes_output_dir,
        output=output,
        output_name=output_name,
    )


def _error(run: ast.FunctionDef, message: str, node: ast.AST | None) -> PackageInvalidError:
    line = getattr(node, "lineno", run.lineno)
    return PackageInvalidError(
        f"predict.py line {line}: {message}",
        SUPPORTED,
        reason="predict_run_signature",
        path="predict.py",
    )


def _param(arg: ast.arg, default_node: ast.expr | None) -> InputParam:
    if arg.annotation is None:
        raise _Unreadable("has no annotation")
    t = _type(arg.annotation)
    if t.is_none:
        raise _Unreadable("None alone is not an input type")
    meta = _checked_meta(t)
    required = default_node is None and not t.nullable
    default: Any = None
    if default_node is not None:
        try:
            default = ast.literal_eval(default_node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
            raise _Unreadable(
                f"its default {ast.unparse(default_node)[:80]} is not a literal"
            ) from err
        if isinstance(default, tuple):
            default = list(default)
    param = InputParam(
        name=arg.arg,
        kind=t.kind,  # type: ignore[arg-type]  # one of the kinds, set by _type
        many=t.many,
        nullable=t.nullable,
        choices=t.choices,
        required=required,
        default=default,
        **meta,
    )
    if default_node is not None:
        _check_default(param)
    return param


def _check_default(param: InputParam) -> None:
    from services.packages.schema import param_type  # the one definition of the types

    try:
        msgspec.convert(param.default, type=param_type(param), strict=True)
    except msgspec.ValidationError as err:
        raise _Unreadable(f"its default {param.default!r} does not fit its type ({err})") from err


def _checked_meta(t: _Type) -> dict[str, Any]:
    meta = dict(t.meta)
    numeric = t.kind in ("int", "float") and t.choices is None
    for key in _BOUNDS:
        if key in meta and not numeric:
            raise _Unreadable(f"Input({key}=...) applies to int and float inputs only")
    for key in _LENGTHS:
        if key in meta and not (t.many or (t.kind == "str" and t.choices is None)):
            raise _Unreadable(f"Input({key}=...) applies to str and list inputs only")
    if "pattern" in meta and not (t.kind == "str" and t.choices is None):
        raise _Unreadable("Input(pattern=...) applies to str inputs only")
    return meta


def _type(node: ast.expr) -> _Type:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
        try:
            node = ast.parse(text, mode="eval").body
        except SyntaxError as err:
            raise _Unreadable(f"its annotation {text!r} does not parse") from err
    if isinstance(node, ast.Constant) and node.value is None:
        return _Type(is_none=True)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([node.left, node.right])
    name = _name(node)
    if name in _SCALARS:
        return _Type(kind=_SCALARS[name])
    if name in _FILES:
        return _Type(kind="file")
    if isinstance(node, ast.Subscript):
        head = _name(node.value)
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if head == "Optional" and len(items) == 1:
            return _nullable(_type(items[0]))
        if head == "Union":
            return _union(items)
        if head in _LISTS and len(items) == 1:
            item = _type(items[0])
            if item.many or item.nullable or item.is_none:
                raise _Unreadable("a list holds plain values (no lists of lists, no None items)")
            item.many = True
            return item
        if head == "Literal":
            return _literal(items)
        if head == "Annotated" and len(items) >= 2:
            inner = _type(items[0])
            for extra in items[1:]:
                inner.meta = {**inner.meta, **_input_call(extra)}
            return inner
    raise _Unreadable(f"its annotation {ast.unparse(node)[:80]} is not supported")


def _name(node: ast.expr) -> str:
    """`X` or the last part of `a.b.X`."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _union(items: list[ast.expr]) -> _Type:
    flat: list[ast.expr] = []
    for item in items:
        while isinstance(item, ast.BinOp) and isinstance(item.op, ast.BitOr):
            flat.append(item.right)
            item = item.left
        flat.append(item)
    types = [_type(item) for item in flat]
    real = [t for t in types if not t.is_none]
    if len(real) != 1 or len(types) != 2:
        raise _Unreadable("a union must be one type and None (X | None)")
    return _nullable(real[0])


def _nullable(t: _Type) -> _Type:
    if t.is_none:
        raise _Unreadable("None alone is not an input type")
    t.nullable = True
    return t


def _literal(items: list[ast.expr]) -> _Type:
    values: list[Any] = []
    for item in items:
        if not (isinstance(item, ast.Constant) and type(item.value) in (str, int)):
            raise _Unreadable("Literal[...] choices must be str or int constants")
        values.append(item.value)
    kinds = {type(v) for v in values}
    if len(kinds) != 1:
        raise _Unreadable("Literal[...] choices must all be str, or all int")
    kind = "str" if kinds == {str} else "int"
    return _Type(kind=kind, choices=tuple(values))


def _input_call(node: ast.expr) -> dict[str, Any]:
    if not (isinstance(node, ast.Call) and _name(node.func) == "Input"):
        raise _Unreadable(
            f"Annotated[...] metadata must be Input(...), not {ast.unparse(node)[:80]}"
        )
    if node.args:
        raise _Unreadable("Input(...) takes keyword arguments only")
    meta: dict[str, Any] = {}
    for keyword in node.keywords:
        key = keyword.arg
        if key not in _INPUT_KEYS:
            raise _Unreadable(
                f"Input() has no argument {key!r}; it takes {', '.join(sorted(_INPUT_KEYS))} "
                "(give a default as the parameter's default)"
            )
        try:
            value = ast.literal_eval(keyword.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
            raise _Unreadable(f"Input({key}=...) must be a literal") from err
        meta[key] = _input_value(key, value)
    return meta


def _input_value(key: str, value: Any) -> Any:
    if key == "description":
        if not isinstance(value, str):
            raise _Unreadable("Input(description=...) must be a string")
        return value
    if key == "pattern":
        if not isinstance(value, str):
            raise _Unreadable("Input(pattern=...) must be a string")
        try:
            re.compile(value)
        except re.error as err:
            raise _Unreadable(f"Input(pattern=...) is not a regular expression: {err}") from err
        return value
    if key in _LENGTHS:
        if type(value) is not int or value < 0:
            raise _Unreadable(f"Input({key}=...) must be a whole number from 0")
        return value
    if type(value) not in (int, float):
        raise _Unreadable(f"Input({key}=...) must be a number")
    return float(value)


def _output(run: ast.FunctionDef, module: ast.Module) -> tuple[tuple[OutputField, ...] | None, str]:
    """The declared result: a TypedDict class defined in predict.py, or None."""
    node = run.returns
    if node is None:
        return None, ""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError as err:
            raise _error(run, "run's return annotation does not parse", run) from err
    name = _name(node.value if isinstance(node, ast.Subscript) else node)
    if name in _ANY_RESULT:
        return None, ""
    classes = {c.name: c for c in module.body if isinstance(c, ast.ClassDef)}
    found = classes.get(name)
    if found is None or not any(_name(base) == "TypedDict" for base in found.bases):
        raise _error(
            run,
            f"run's return annotation {ast.unparse(node)[:80]} is not supported: declare the "
            "result as a TypedDict class in predict.py, or annotate it as dict",
            node,
        )
    total = all(
        not (k.arg == "total" and isinstance(k.value, ast.Constant) and k.value.value is False)
        for k in found.keywords
    )
    fields: list[OutputField] = []
    for stmt in found.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        try:
            t = _type(stmt.annotation)
        except _Unreadable as err:
            raise _error(run, f"{name}'s field {stmt.target.id!r}: {err}", stmt) from err
        fields.append(
            OutputField(
                name=stmt.target.id,
                kind=t.kind,  # type: ignore[arg-type]
                many=t.many,
                nullable=t.nullable,
                choices=t.choices,
                required=total,
            )
        )
    return tuple(fields), name
