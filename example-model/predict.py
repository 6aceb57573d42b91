"""ClinAI example model: converts an image to grayscale.

The runner loads this file once per warm worker, calls `setup()` once, then calls
`run(...)` for each job with the job's typed inputs, which ClinAI reads from the
signature below (without running this file): the image (a `File`, a path inside the
sandbox) and `levels`, checked by the server against `Input(ge=2, le=256)` before the
job is queued. Everything `run` writes into `output_dir` is uploaded as the job's
outputs; the dict it returns is the job's result, checked against `Result`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, TypedDict

from PIL import Image

from runner import File, Input

OUTPUT_NAME = "grayscale.png"

_loaded_at: float | None = None


class Result(TypedDict):
    width: int
    height: int
    mode: str  # of the original image, e.g. "RGB"
    format: str | None  # of the original image, e.g. "PNG"
    grayscale: str  # the output file's name in output_dir


def setup() -> None:
    """Called once per worker before the first job. A real model would load its
    weights here; this one only records when it was loaded."""
    global _loaded_at
    _loaded_at = time.time()


def run(
    input: Annotated[File, Input(description="the image to convert")],
    output_dir: Path,
    levels: Annotated[
        int, Input(ge=2, le=256, description="grey levels in the output (256: all)")
    ] = 256,
) -> Result:
    """Convert the image `input` to 8-bit grayscale ("L") with `levels` grey levels and
    write it as `output_dir/grayscale.png`."""
    with Image.open(input) as image:
        image.load()
        meta: Result = {
            "width": image.width,
            "height": image.height,
            "mode": image.mode,
            "format": image.format,
            "grayscale": OUTPUT_NAME,
        }
        gray = image.convert("L")
    if levels < 256:
        step = 256 / levels
        gray = gray.point(lambda v: int(int(v / step) * step))
    gray.save(Path(output_dir) / OUTPUT_NAME, format="PNG")
    return meta
