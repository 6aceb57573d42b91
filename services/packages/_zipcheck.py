"""Zip-level checks for model packages: entry names, entry kinds, declared sizes, overlap.

Private to `services.packages`. Nothing here extracts or imports anything; the functions
look at the central directory (and, before `zipfile` parses it, at the end record) and
raise `PackageInvalidError` with a hint the uploader can act on.
"""

from __future__ import annotations

import re
import stat
import struct
import unicodedata
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from events import ClinaiError

__all__ = [
    "ALLOWED_COMPRESSION",
    "IGNORED_NAMES",
    "PackageInvalidError",
    "Reason",
    "check_entry_kind",
    "check_no_overlap",
    "clean_name",
    "precount_entries",
]

Reason = Literal[
    "too_large",
    "not_zip",
    "too_many_entries",
    "too_much_data",
    "zip_bomb",
    "unsafe_path",
    "duplicate_path",
    "symlink",
    "special_file",
    "encrypted",
    "unsupported_compression",
    "corrupt",
    "no_predict",
    "predict_syntax",
    "predict_no_run",
    "predict_run_signature",
    "source_too_large",
    "requirements_encoding",
    "requirements_local_reference",
    "requirements_too_many",
]


class PackageInvalidError(ClinaiError):
    """The uploaded package cannot be accepted.

    `message` says what is wrong, `hint` what the uploader should do, `reason` is a
    stable machine-readable code (for the API's problem type and for tests), and `path`
    names the offending entry when there is one.
    """

    def __init__(
        self, message: str, hint: str, *, reason: Reason = "corrupt", path: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.reason: Reason = reason
        self.path = path

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})"


# STORED and DEFLATED only: zipfile decompresses those with a bounded output per read.
# Its bzip2/lzma paths decompress a whole read without a cap, which a bomb can abuse.
ALLOWED_COMPRESSION = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})

# Archive noise added by macOS Finder; skipped (never read, never extracted).
IGNORED_NAMES = frozenset({".DS_Store"})
_IGNORED_TOP = "__MACOSX"

_MAX_PATH_CHARS = 1024
_MAX_SEGMENT_CHARS = 255
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_REZIP_HINT = "Re-create the zip from the package folder, e.g. `cd model && zip -r ../model.zip .`."

# End-of-central-directory records (APPNOTE 4.3.16, 4.3.14, 4.3.15).
_EOCD_SIG = b"PK\x05\x06"
_EOCD64_LOC_SIG = b"PK\x06\x07"
_EOCD64_SIG = b"PK\x06\x06"
_EOCD_MIN = 22
_CD_ENTRY_MIN = 46
_LOCAL_HEADER_MIN = 30


def precount_entries(zip_path: Path, max_entries: int) -> None:
    """Refuse an archive whose end record announces too many entries or too large a
    central directory, before `zipfile` materialises one object per entry.

    Only a cheap first line: if the end record cannot be parsed, `zipfile` will refuse
    the file itself; the entry count is checked again on the parsed directory.
    """
    with zip_path.open("rb") as fh:
        fh.seek(0, 2)
        file_size = fh.tell()
        tail_len = min(file_size, _EOCD_MIN + 0xFFFF)
        fh.seek(file_size - tail_len)
        tail = fh.read(tail_len)
        at = tail.rfind(_EOCD_SIG)
        if at < 0 or len(tail) - at < _EOCD_MIN:
            return
        _, _, _, _, entries, cd_size, _, _ = struct.unpack("<4s4H2LH", tail[at : at + _EOCD_MIN])
        if entries == 0xFFFF or cd_size == 0xFFFFFFFF:
            loc_at = at - 20
            if loc_at < 0 or tail[loc_at : loc_at + 4] != _EOCD64_LOC_SIG:
                return
            (eocd64_offset,) = struct.unpack("<Q", tail[loc_at + 8 : loc_at + 16])
            fh.seek(eocd64_offset)
            record = fh.read(56)
            if len(record) < 56 or record[:4] != _EOCD64_SIG:
                return
            entries, cd_size = struct.unpack("<QQ", record[32:48])
    # Generous per-entry allowance: fixed header + name + extra field and comment.
    cd_budget = max_entries * (_CD_ENTRY_MIN + _MAX_PATH_CHARS * 4 + 2048)
    if entries > max_entries or cd_size > cd_budget:
        raise PackageInvalidError(
            f"the zip declares {entries} entries; at most {max_entries} are allowed",
            "Leave data sets, caches and virtualenvs out of the package; "
            "download large assets in setup() or bundle them into fewer files.",
            reason="too_many_entries",
        )


def clean_name(raw: str) -> str | None:
    """Validate one entry name and return it normalised (NFC, no trailing slash).

    Returns None for entries that are skipped: directories and macOS archive noise.
    """
    shown = raw.replace("\x00", "\\0")
    if "\\" in raw or _DRIVE.match(raw):
        raise PackageInvalidError(
            f"entry {shown!r} uses a Windows path (backslash or drive letter)",
            "Create the zip with a tool that writes '/' separators and relative paths. "
            + _REZIP_HINT,
            reason="unsafe_path",
            path=shown,
        )
    if raw.startswith("/"):
        raise PackageInvalidError(
            f"entry {shown!r} has an absolute path",
            "Zip the package with relative paths. " + _REZIP_HINT,
            reason="unsafe_path",
            path=shown,
        )
    if _CONTROL.search(raw) or len(raw) > _MAX_PATH_CHARS:
        raise PackageInvalidError(
            f"entry {shown[:80]!r} has control characters or a path over "
            f"{_MAX_PATH_CHARS} characters",
            "Rename the file with printable characters and a shorter path.",
            reason="unsafe_path",
            path=shown[:_MAX_PATH_CHARS],
        )
    is_dir = raw.endswith("/")
    name = unicodedata.normalize("NFC", raw[:-1] if is_dir else raw)
    segments = name.split("/")
    if any(seg in ("", ".", "..") for seg in segments):
        raise PackageInvalidError(
            f"entry {shown!r} has an empty, '.' or '..' path segment",
            "Package files must stay inside the package folder. " + _REZIP_HINT,
            reason="unsafe_path",
            path=shown,
        )
    if any(len(seg) > _MAX_SEGMENT_CHARS for seg in segments):
        raise PackageInvalidError(
            f"entry {shown[:80]!r} has a path segment over {_MAX_SEGMENT_CHARS} characters",
            "Shorten the file or folder name.",
            reason="unsafe_path",
            path=shown,
        )
    if is_dir or segments[0] == _IGNORED_TOP or segments[-1] in IGNORED_NAMES:
        return None
    return name


def check_entry_kind(info: zipfile.ZipInfo, name: str) -> None:
    """Refuse symlinks, device files and the like, encrypted entries and compression
    methods we do not decompress."""
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise PackageInvalidError(
            f"entry {name!r} is a symbolic link",
            "Replace the link with the file itself (e.g. `zip -r` without `--symlinks`).",
            reason="symlink",
            path=name,
        )
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise PackageInvalidError(
            f"entry {name!r} is not a regular file",
            "Only regular files can be packaged; remove devices, pipes and sockets.",
            reason="special_file",
            path=name,
        )
    if info.flag_bits & 0x1:
        raise PackageInvalidError(
            f"entry {name!r} is encrypted",
            "Upload the package without a zip password.",
            reason="encrypted",
            path=name,
        )
    if info.compress_type not in ALLOWED_COMPRESSION:
        raise PackageInvalidError(
            f"entry {name!r} uses compression method {info.compress_type}",
            "Use the standard 'deflate' (or 'store') method, as `zip` does by default.",
            reason="unsupported_compression",
            path=name,
        )


def check_no_overlap(infos: Sequence[zipfile.ZipInfo], archive_size: int) -> None:
    """Refuse entries whose data overlap (the 'overlapping files' zip bomb) or run past
    the end of the archive. A local header is at least 30 bytes, so each entry occupies
    at least `30 + compress_size` bytes from its header offset."""
    ordered = sorted(infos, key=lambda i: i.header_offset)
    for index, current in enumerate(ordered):
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        end = current.header_offset + _LOCAL_HEADER_MIN + current.compress_size
        limit = archive_size if following is None else following.header_offset
        if end > limit:
            raise PackageInvalidError(
                f"entry {current.filename!r} overlaps another entry or the end of the archive",
                "The zip is malformed or crafted; re-create it with a standard tool. "
                + _REZIP_HINT,
                reason="zip_bomb" if following is not None else "corrupt",
                path=current.filename,
            )
