"""A typed run whose first file is named `input` (the legacy form's field) next to a
list of files: the sizes it was given."""

from pathlib import Path
from typing import TypedDict

from runner import File


class Result(TypedDict):
    input: int
    more: list[int]


def run(input: File, output_dir: Path, more: list[File] | None = None) -> Result:
    return {
        "input": len(input.read_bytes()),
        "more": [len(f.read_bytes()) for f in more or []],
    }
