"""`name=value` words read by a version's JSON Schema (the one the API serves, here
compiled from a typed signature as the API compiles it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from events import InputParam, InputSchema
from services.cli._errors import CliError
from services.cli._inputs import form_value, parse_inputs
from services.packages.schema import CompiledInputs

SCHEMA = CompiledInputs(
    InputSchema(
        params=(
            InputParam(name="image", kind="file"),
            InputParam(name="threshold", kind="float", required=False, default=0.5, ge=0, le=1),
            InputParam(name="steps", kind="int", required=False, default=3),
            InputParam(name="sharp", kind="bool", required=False, default=False),
            InputParam(name="mode", kind="str", choices=("fast", "best"), required=False,
                       default="fast"),
            InputParam(name="tags", kind="str", many=True, required=False, default=[]),
            InputParam(name="note", kind="str", nullable=True, required=False),
            InputParam(name="masks", kind="file", many=True, nullable=True, required=False),
        )
    )
).json_schema()  # fmt: skip


def test_values_take_the_type_their_input_declares(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"png")
    words = [
        f"image=@{photo}", "threshold=1", "steps=7", "sharp=yes", "mode=best", "tags=a, b",
        "note=null", f"masks=@{photo}", f"masks=@{photo}",
    ]  # fmt: skip
    given = parse_inputs(SCHEMA, words)
    assert given.values == {
        "threshold": 1.0,
        "steps": 7,
        "sharp": True,
        "mode": "best",
        "tags": ["a", "b"],
        "note": None,
    }
    assert isinstance(given.values["threshold"], float)
    assert given.files == {"image": [photo], "masks": [photo, photo]}
    assert parse_inputs(SCHEMA, ['tags=["x,y"]']).values == {"tags": ["x,y"]}
    assert [form_value(v) for v in ("a b", 0.3, ["a"], None)] == ["a b", "0.3", '["a"]', "null"]


@pytest.mark.parametrize(
    ("word", "says"),
    [
        ("threshold=high", "input 'threshold': 'high' is not a number"),
        ("mode=slow", "input 'mode': 'slow' is not one of best, fast"),  # the schema's order
        ("sharp=maybe", "'maybe' is not true or false"),
        ("color=red", "'color' is not an input of this version; its inputs are: image,"),
        ("image=photo.png", "input 'image' is a file: write image=@PATH"),
        ("image=@/nonexistent.png", "input 'image': /nonexistent.png is not a file"),
        ("steps=@x", "input 'steps' is not a file"),
        ("steps", "'steps' is not an input: write name=value"),
    ],
)
def test_a_word_that_does_not_fit_says_why(word: str, says: str) -> None:
    with pytest.raises(CliError) as raised:
        parse_inputs(SCHEMA, [word])
    assert says in raised.value.message


def test_the_legacy_form_takes_one_input_file_and_free_params(tmp_path: Path) -> None:
    data = tmp_path / "d.txt"
    data.write_text("x")
    given = parse_inputs({"x-clinai-form": "legacy"}, [f"input=@{data}", "k=3", "how=segfault"])
    assert given.legacy and given.files == {"input": [data]}
    assert given.values == {"k": 3, "how": "segfault"}
