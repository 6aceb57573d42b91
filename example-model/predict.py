"""ClinAI example model: converts an image to grayscale.

The runner loads this file once per warm worker, calls `setup()` once, then calls
`run(input_path, output_dir)` for each job. Everything `run` writes into `output_dir`
is uploaded as the job's outputs; the dict it returns is the job's result.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PIL import Image

OUTPUT_NAME = "grayscale.png"

_loaded_at: float | None = None


def setup() -> None:
    """Called once per worker before the first job. A real model would load its
    weights here; this one only records when it was loaded."""
    global _loaded_at
    _loaded_at = time.time()


def run(input_path: str | Path, output_dir: str | Path) -> dict[str, Any]:
    """Convert the image at `input_path` to 8-bit grayscale ("L") and write it as
    `output_dir/grayscale.png`."""
    with Image.open(input_path) as image:
        image.load()
        meta: dict[str, Any] = {
            "width": image.width,
            "height": image.height,
            "mode": image.mode,
            "format": image.format,
            "grayscale": OUTPUT_NAME,
        }
        gray = image.convert("L")
    gray.save(Path(output_dir) / OUTPUT_NAME, format="PNG")
    return meta
