"""A typed run: a file, a bounded float, a choice, a list, optional values, a list of
files; the result is declared (`Result`) and, with `wrong=True`, broken on purpose."""

from pathlib import Path
from typing import Annotated, Literal, TypedDict

from runner import File, Input


class Result(TypedDict):
    image_is_file: bool
    image_name: str
    size: int
    scale: float
    scale_type: str
    mode: str
    tags: list[str]
    note: str | None
    more: list[int]
    reversed: File


def run(
    image: Annotated[File, Input(description="any file")],
    output_dir: Path,
    scale: Annotated[float, Input(ge=0, le=1, description="how much")] = 0.5,
    mode: Literal["fast", "slow"] = "fast",
    tags: list[str] = ["a"],  # noqa: B006  (the server applies defaults: never shared)
    note: str | None = None,
    more: list[File] | None = None,
    wrong: bool = False,
) -> Result:
    data = image.read_bytes()
    (output_dir / "reversed.bin").write_bytes(data[::-1])
    if wrong:
        return {"image_is_file": True, "size": "many"}  # type: ignore[typeddict-item]
    return {
        "image_is_file": isinstance(image, File) and image.is_file(),
        "image_name": image.name,
        "size": len(data),
        "scale": scale,
        "scale_type": type(scale).__name__,
        "mode": mode,
        "tags": tags,
        "note": note,
        "more": [len(f.read_bytes()) for f in more or []],
        "reversed": "reversed.bin",
    }
