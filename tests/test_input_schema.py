"""The typed-inputs reader (`services/packages/_signature.py`: run's signature read from
predict.py's syntax tree, never imported) and the compiled schema
(`services/packages/schema.py`: JSON Schema, the check of a job's inputs and of a
declared result), on many signatures, good and bad."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from events import InputParam, InputSchema, VersionUploaded, decode_event, encode_event
from services.packages import PackageInvalidError, inspect_package
from services.packages._sources import check_predict
from services.packages.schema import CompiledInputs, InputsInvalidError

HEAD = (
    "from pathlib import Path\n"
    "from typing import Annotated, List, Literal, Optional, TypedDict, Union\n"
    "import typing\n"
    "from runner import File, Input\n"
    "import runner\n"
)


def schema_of(signature: str, body: str = "    return {}\n", head: str = "") -> InputSchema | None:
    source = f"{HEAD}{head}\ndef run({signature}):\n{body}"
    return check_predict(source.encode())[1]


def refusal(signature: str, head: str = "") -> str:
    with pytest.raises(PackageInvalidError) as caught:
        schema_of(signature, head=head)
    assert caught.value.reason == "predict_run_signature"
    return str(caught.value)


def params(signature: str) -> dict[str, InputParam]:
    schema = schema_of(signature)
    assert schema is not None
    return {p.name: p for p in schema.params}


@pytest.mark.parametrize(
    "signature",
    [
        "input_path, output_dir",
        "input_path: str, output_dir: str",
        "input_path: str, output_dir: str, params: dict",
        "a, b",
        "a, b, c=1",
    ],
)
def test_the_legacy_form_has_no_schema(signature: str) -> None:
    assert schema_of(signature) is None


@pytest.mark.parametrize(
    ("annotation", "kind", "many", "nullable", "choices"),
    [
        ("File", "file", False, False, None),
        ("runner.File", "file", False, False, None),
        ("Path", "file", False, False, None),
        ("list[File]", "file", True, False, None),
        ("str", "str", False, False, None),
        ("int", "int", False, False, None),
        ("float", "float", False, False, None),
        ("bool", "bool", False, False, None),
        ("'float'", "float", False, False, None),
        ("Literal['a', 'b']", "str", False, False, ("a", "b")),
        ("typing.Literal[1, 2, 3]", "int", False, False, (1, 2, 3)),
        ("list[str]", "str", True, False, None),
        ("List[int]", "int", True, False, None),
        ("list[Literal['x', 'y']]", "str", True, False, ("x", "y")),
        ("float | None", "float", False, True, None),
        ("None | float", "float", False, True, None),
        ("Optional[str]", "str", False, True, None),
        ("typing.Optional[list[File]]", "file", True, True, None),
        ("Union[int, None]", "int", False, True, None),
        ("Annotated[float, Input(ge=0)] | None", "float", False, True, None),
        ("Optional[Annotated[int, runner.Input(le=3)]]", "int", False, True, None),
    ],
)
def test_supported_annotations(
    annotation: str, kind: str, many: bool, nullable: bool, choices: tuple[Any, ...] | None
) -> None:
    p = params(f"x: {annotation}")["x"]
    assert (p.kind, p.many, p.nullable, p.choices) == (kind, many, nullable, choices)
    assert p.required is not nullable  # an optional input without a default is None


def test_constraints_defaults_and_output_dir() -> None:
    schema = schema_of(
        "image: File, output_dir: Path, "
        "t: Annotated[float, Input(ge=0, le=1, description='how sure')] = 0.5, "
        "name: Annotated[str, Input(min_length=1, max_length=8, pattern='^[a-z]+$')] = 'abc', "
        "tags: Annotated[list[str], Input(max_length=3)] = ['a'], *, n: int = -2"
    )
    assert schema is not None and schema.takes_output_dir and schema.output is None
    by_name = {p.name: p for p in schema.params}
    assert list(by_name) == ["image", "t", "name", "tags", "n"]
    assert by_name["image"].required and not by_name["t"].required
    t = by_name["t"]
    assert (t.ge, t.le, t.description, t.default) == (0.0, 1.0, "how sure", 0.5)
    name = by_name["name"]
    assert (name.min_length, name.max_length, name.pattern) == (1, 8, "^[a-z]+$")
    assert by_name["tags"].default == ["a"] and by_name["tags"].max_length == 3
    assert by_name["n"].default == -2


@pytest.mark.parametrize(
    ("signature", "says"),
    [
        ("image: File, threshold", "'threshold': has no annotation"),
        ("x: dict", "'x': its annotation dict is not supported"),
        ("x: list[list[int]]", "no lists of lists"),
        ("x: list[int | None]", "no lists of lists, no None items"),
        ("x: int | str", "one type and None"),
        ("x: None", "None alone"),
        ("x: Literal['a', 1]", "must all be str, or all int"),
        ("x: Literal[1.5]", "str or int constants"),
        ("x: Annotated[int, 'doc']", "must be Input(...)"),
        ("x: Annotated[int, Input(default=3)]", "Input() has no argument 'default'"),
        ("x: Annotated[int, Input(3)]", "keyword arguments only"),
        ("x: Annotated[int, Input(ge=LOW)]", "Input(ge=...) must be a literal"),
        ("x: Annotated[str, Input(ge=1)]", "applies to int and float inputs only"),
        ("x: Annotated[int, Input(pattern='a')]", "applies to str inputs only"),
        ("x: Annotated[int, Input(max_length=2)]", "applies to str and list inputs only"),
        ("x: Annotated[str, Input(pattern='(')]", "not a regular expression"),
        ("x: Annotated[str, Input(min_length=-1)]", "whole number from 0"),
        ("x: int = DEFAULT", "its default DEFAULT is not a literal"),
        ("x: int = 'three'", "its default 'three' does not fit its type"),
        ("x: Annotated[float, Input(le=1)] = 2.0", "its default 2.0 does not fit"),
        ("x: float = None", "its default None does not fit"),
        ("x: Literal['a', 'b'] = 'c'", "its default 'c' does not fit"),
        ("x: int, *rest: int", "*rest cannot be read"),
        ("x: int, **kw: int", "*kw cannot be read"),
        ("x: int, /", "passed by name"),
        ("x: 'int[['", "does not parse"),
    ],
)
def test_unreadable_signatures_name_the_parameter(signature: str, says: str) -> None:
    message = refusal(signature)
    assert says in message, message
    assert "line " in message and "Supported annotations" in message


def test_a_declared_result_is_read_from_a_typeddict() -> None:
    head = (
        "class Result(TypedDict):\n"
        "    width: int\n"
        "    label: Literal['cat', 'dog']\n"
        "    scores: list[float]\n"
        "    mask: File\n"
        "    note: str | None\n"
    )
    schema = schema_of("x: File", head=head).__class__  # keep mypy calm below
    declared = check_predict(
        f"{HEAD}{head}\ndef run(x: File) -> Result:\n    return {{}}\n".encode()
    )[1]
    assert schema is InputSchema and declared is not None
    assert declared.output_name == "Result"
    assert declared.output is not None
    assert [(f.name, f.kind, f.many, f.nullable) for f in declared.output] == [
        ("width", "int", False, False),
        ("label", "str", False, False),
        ("scores", "float", True, False),
        ("mask", "file", False, False),
        ("note", "str", False, True),
    ]


@pytest.mark.parametrize(
    ("returns", "says"),
    [
        ("int", "return annotation int is not supported"),
        ("Missing", "declare the result as a TypedDict"),
    ],
)
def test_an_unsupported_return_annotation_is_refused(returns: str, says: str) -> None:
    with pytest.raises(PackageInvalidError, match=says):
        check_predict(f"{HEAD}\ndef run(x: File) -> {returns}:\n    return {{}}\n".encode())


@pytest.mark.parametrize("returns", ["dict", "dict[str, typing.Any]", "typing.Dict[str, int]"])
def test_a_dict_return_annotation_declares_nothing(returns: str) -> None:
    schema = check_predict(f"{HEAD}\ndef run(x: File) -> {returns}:\n    return {{}}\n".encode())[1]
    assert schema is not None and schema.output is None


def test_an_upload_with_a_bad_signature_is_refused_naming_the_parameter(tmp_path: Path) -> None:
    path = tmp_path / "p.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("predict.py", f"{HEAD}\ndef run(image: File, level: dict = {{}}):\n    pass\n")
    with pytest.raises(PackageInvalidError) as caught:
        inspect_package(path)
    assert "'level'" in caught.value.message and caught.value.reason == "predict_run_signature"


def test_the_schema_travels_in_version_uploaded_and_old_events_still_decode() -> None:
    schema = schema_of("image: File, t: Annotated[float, Input(ge=0)] = 1.0")
    assert schema is not None
    event = VersionUploaded(
        id="e1",
        aggregate_id="ver_1",
        occurred_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
        actor="u",
        correlation_id="c",
        model_id="m",
        owner="u",
        number=1,
        package_key="k",
        package_hash="h",
        requirements_hash="r",
        size_bytes=1,
        input_schema=schema,
    )
    data = encode_event(event)
    decoded = decode_event(data)
    assert isinstance(decoded, VersionUploaded) and decoded.input_schema == schema
    old = data.replace(b',"input_schema"', b',"ignored"')
    assert b'"input_schema"' not in old
    legacy = decode_event(old)
    assert isinstance(legacy, VersionUploaded) and legacy.input_schema is None


@pytest.fixture
def compiled() -> CompiledInputs:
    schema = schema_of(
        "image: File, t: Annotated[float, Input(ge=0, le=1)] = 0.5, "
        "mode: Literal['a', 'b'] = 'a', tags: list[str] = [], n: int | None = None, "
        "more: list[File] | None = None"
    )
    assert schema is not None
    return CompiledInputs(schema)


def test_inputs_get_their_defaults(compiled: CompiledInputs) -> None:
    assert compiled.resolve({"image": "upload_1", "t": 1}) == {
        "image": "upload_1",
        "t": 1.0,
        "mode": "a",
        "tags": [],
        "n": None,
        "more": None,
    }
    first = compiled.resolve({"image": "x"})
    first["tags"].append("changed")
    assert compiled.resolve({"image": "x"})["tags"] == []  # a default is never shared


@pytest.mark.parametrize(
    ("given", "field", "expected", "got"),
    [
        ({"image": "x", "t": 2}, "t", "a number >= 0 and <= 1", "2"),
        ({"image": "x", "t": "0.5"}, "t", "a number >= 0 and <= 1", '"0.5"'),
        ({"image": "x", "mode": "c"}, "mode", "one of 'a', 'b'", '"c"'),
        ({"image": "x", "tags": ["a", 1]}, "tags", "a list of (a string)", "1"),
        ({"image": "x", "n": 1.5}, "n", "an integer, or null", "1.5"),
        ({"image": 3}, "image", "a file", "3"),
        ({}, "image", "a file", None),
        ({"image": "x", "colour": "red"}, "colour", "no such input", '"red"'),
    ],
)
def test_bad_inputs_name_the_field_what_it_takes_and_what_came(
    compiled: CompiledInputs, given: dict[str, Any], field: str, expected: str, got: str | None
) -> None:
    with pytest.raises(InputsInvalidError) as caught:
        compiled.resolve(given)
    err = caught.value
    assert (err.field, err.expected, err.got) == (field, expected, got)
    assert field in err.message


def test_the_json_schema_marks_files_and_keeps_the_declared_order(compiled: CompiledInputs) -> None:
    document = compiled.json_schema()
    assert list(document["properties"]) == ["image", "t", "mode", "tags", "n", "more"]
    assert document["required"] == ["image"]
    assert document["properties"]["image"]["x-clinai-file"] is True
    assert (
        document["properties"]["t"]["minimum"] == 0 and document["properties"]["t"]["maximum"] == 1
    )
    assert "x-clinai-output" not in document


def test_a_declared_result_is_checked() -> None:
    head = "class Out(TypedDict):\n    width: int\n    mask: File\n"
    schema = check_predict(f"{HEAD}{head}\ndef run(x: File) -> Out:\n    return {{}}\n".encode())[1]
    assert schema is not None
    compiled = CompiledInputs(schema)
    names = frozenset({"mask.png"})
    assert compiled.check_output({"width": 3, "mask": "mask.png"}, names) is None
    wrong_type = compiled.check_output({"width": "3", "mask": "mask.png"}, names)
    assert wrong_type is not None and "declared Out" in wrong_type and "$.width" in wrong_type
    missing = compiled.check_output({"mask": "mask.png"}, names)
    assert missing is not None and "width" in missing
    no_file = compiled.check_output({"width": 3, "mask": "other.png"}, names)
    assert no_file is not None and "wrote no such file" in no_file
