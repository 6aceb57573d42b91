"""A model package folder as the zip a user uploads (the inverse of `unpack_package`)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["zip_folder"]


def zip_folder(folder: Path, extra: Mapping[str, str] | None = None) -> bytes:
    """Every file under `folder` (caches left out) at the zip's root, plus `extra`
    files given as name -> text."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                zf.write(file, file.relative_to(folder).as_posix())
        for name, text in (extra or {}).items():
            zf.writestr(name, text)
    return buf.getvalue()
