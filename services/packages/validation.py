"""Model package validation and unpacking.

A package is a zip holding `predict.py` (with a top-level `def run(input_path,
output_dir)` and optionally `def setup()`) and optionally `requirements.txt`. Files may
sit at the root of the zip or inside one top-level folder, which is then stripped.

Nothing from the package is ever imported or executed here: `predict.py` is checked
with `ast`. Sizes are checked on the declared headers first and enforced again while
the data are decompressed, because headers can lie.

Both functions do blocking I/O and CPU work; call them from async code through
`asyncio.to_thread`.

Decisions:

- A missing `requirements.txt` is accepted and treated as empty (a model that needs
  only the base image's packages); `PackageInfo.has_requirements` tells the two apart.
- The requirements are normalised textually (continuation lines joined, comments and
  blank lines dropped, lines stripped) but their ORDER IS KEPT and nothing is sorted
  or de-duplicated: pip's resolver visits requirements in file order, so two files
  that differ only in order can resolve differently when several solutions exist, and
  option lines are order sensitive. A reorder costs a cache miss, never a wrong cache
  hit.
- `requirements.txt` must be self-contained (no `-r`/`-c` includes, no local paths):
  the dependency layer is built before the package code is copied in, and the
  requirements hash would not cover the referenced files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import msgspec

from events import InputSchema
from services.packages._sources import (
    PREDICT,
    REQUIREMENTS,
    check_predict,
    decode_requirements,
    normalise_requirements,
)
from services.packages._zipcheck import (
    PackageInvalidError,
    check_entry_kind,
    check_no_overlap,
    clean_name,
    precount_entries,
)

__all__ = [
    "PackageFile",
    "PackageInfo",
    "PackageInvalidError",
    "PackageLimits",
    "inspect_package",
    "unpack_package",
]

MiB = 1024 * 1024
GiB = 1024 * MiB
_CHUNK = 1 * MiB
_FILE_MODE = 0o644
_DIR_MODE = 0o755
_HASH_DOMAIN = b"clinai-package-v1\n"
_BAD_ZIP = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError)


class PackageLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Upper bounds for an uploaded package. `max_ratio` applies to entries whose
    declared size is at least `ratio_min_bytes` (tiny files compress absurdly well)."""

    max_zip_bytes: int = 512 * MiB
    max_entries: int = 10_000
    max_total_bytes: int = 2 * GiB
    max_ratio: float = 100.0
    ratio_min_bytes: int = 1 * MiB
    max_source_bytes: int = 4 * MiB  # predict.py and requirements.txt are read into memory
    # pip's resolver is slow on many lines: 200,000 took a core and 600 MB for 16 minutes
    max_requirements: int = 1_000

    def __post_init__(self) -> None:
        for field in self.__struct_fields__:
            if getattr(self, field) <= 0:
                raise ValueError(f"PackageLimits.{field} must be positive")


class PackageFile(msgspec.Struct, frozen=True):
    path: str  # relative, '/'-separated, top-level folder stripped
    size: int
    sha256: str


class PackageInfo(msgspec.Struct, frozen=True, kw_only=True):
    package_hash: str  # sha256 over sorted (path, file sha256) of every file
    code_hash: str  # the same, without requirements.txt
    requirements_hash: str  # sha256 of the normalised requirement lines
    requirements: tuple[str, ...]
    has_requirements: bool
    has_setup: bool
    files: tuple[PackageFile, ...]  # sorted by path
    total_size: int
    stripped_prefix: str | None = None  # the top-level folder that was stripped
    input_schema: InputSchema | None = None  # run's typed inputs; None: the legacy form


def inspect_package(zip_path: Path, limits: PackageLimits | None = None) -> PackageInfo:
    """Validate the package and describe it, without writing anything.

    Raises `PackageInvalidError` for anything the uploader must fix.
    """
    return _scan(zip_path, limits or PackageLimits(), None)


def unpack_package(zip_path: Path, dest_dir: Path, limits: PackageLimits | None = None) -> None:
    """Validate the package and extract it into `dest_dir` (created; must be absent or
    empty). Files get mode 0644, folders 0755; nothing is written outside `dest_dir`,
    and on any error nothing is left behind. Raises `PackageInvalidError`, or
    `FileExistsError` when `dest_dir` is not empty."""
    limits = limits or PackageLimits()
    if dest_dir.exists() and (not dest_dir.is_dir() or any(dest_dir.iterdir())):
        raise FileExistsError(f"unpack_package: dest_dir {dest_dir} exists and is not empty")
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = dest_dir.parent / f".{dest_dir.name}.unpack-{uuid.uuid4().hex}"
    staging.mkdir(mode=_DIR_MODE)
    try:
        _scan(zip_path, limits, staging)
        if dest_dir.exists():
            dest_dir.rmdir()
        staging.rename(dest_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _scan(zip_path: Path, limits: PackageLimits, out_dir: Path | None) -> PackageInfo:
    archive_size = zip_path.stat().st_size
    if archive_size > limits.max_zip_bytes:
        raise PackageInvalidError(
            f"the package is {archive_size} bytes; the limit is {limits.max_zip_bytes}",
            "Leave data sets and caches out of the package and download large assets in setup().",
            reason="too_large",
        )
    precount_entries(zip_path, limits.max_entries)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (*_BAD_ZIP, OSError) as err:
        raise PackageInvalidError(
            "the upload is not a readable zip archive",
            "Upload a .zip file holding predict.py (and requirements.txt).",
            reason="not_zip",
        ) from err
    with zf:
        entries, prefix = _validated_entries(zf.infolist(), limits, archive_size)
        predict_src = _read_small(zf, entries, PREDICT, limits)
        if predict_src is None:
            raise PackageInvalidError(
                "the package has no predict.py at its root",
                "Put predict.py at the top of the zip, or inside one single top-level folder.",
                reason="no_predict",
            )
        has_setup, input_schema = check_predict(predict_src)
        req_src = _read_small(zf, entries, REQUIREMENTS, limits)
        requirements = normalise_requirements(decode_requirements(req_src or b""))
        if len(requirements) > limits.max_requirements:
            raise PackageInvalidError(
                f"requirements.txt has {len(requirements)} requirement lines; the limit is "
                f"{limits.max_requirements}",
                "List each package once; the packages they depend on need no line of their own.",
                reason="requirements_too_many",
                path=REQUIREMENTS,
            )
        files = _stream_all(zf, entries, limits, out_dir)
    return PackageInfo(
        package_hash=_tree_hash(files),
        code_hash=_tree_hash(f for f in files if f.path != REQUIREMENTS),
        requirements_hash=hashlib.sha256("\n".join(requirements).encode()).hexdigest(),
        requirements=requirements,
        has_requirements=req_src is not None,
        has_setup=has_setup,
        input_schema=input_schema,
        files=files,
        total_size=sum(f.size for f in files),
        stripped_prefix=prefix,
    )


_Entries = dict[str, zipfile.ZipInfo]  # package path -> zip entry


def _validated_entries(
    infos: list[zipfile.ZipInfo], limits: PackageLimits, archive_size: int
) -> tuple[_Entries, str | None]:
    if len(infos) > limits.max_entries:
        raise PackageInvalidError(
            f"the zip holds {len(infos)} entries; at most {limits.max_entries} are allowed",
            "Leave data sets, caches and virtualenvs out of the package.",
            reason="too_many_entries",
        )
    declared = 0
    kept: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = clean_name(info.filename)
        check_entry_kind(info, name or info.filename)
        declared += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= limits.ratio_min_bytes and ratio > limits.max_ratio:
            raise PackageInvalidError(
                f"entry {info.filename!r} expands {ratio:.0f}x "
                f"(limit {limits.max_ratio:.0f}x): this looks like a zip bomb",
                "Do not upload highly repetitive generated files; create them in setup().",
                reason="zip_bomb",
                path=info.filename,
            )
        if name is None:
            continue
        if name in kept:
            raise PackageInvalidError(
                f"the zip holds {name!r} more than once",
                "Re-create the zip so that every file appears once.",
                reason="duplicate_path",
                path=name,
            )
        kept[name] = info
    if declared > limits.max_total_bytes:
        raise PackageInvalidError(
            f"the package unpacks to {declared} bytes; the limit is {limits.max_total_bytes}",
            "Leave data sets and caches out of the package and download large assets in setup().",
            reason="too_much_data",
        )
    check_no_overlap(infos, archive_size)
    return _strip_top_folder(kept)


def _strip_top_folder(kept: _Entries) -> tuple[_Entries, str | None]:
    """Accept files that all sit in one top-level folder as if they were at the root."""
    tops = {name.split("/", 1)[0] for name in kept}
    prefix = tops.pop() if len(tops) == 1 and all("/" in n for n in kept) else None
    entries = {(n.split("/", 1)[1] if prefix else n): info for n, info in kept.items()}
    for name in entries:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in entries:
                raise PackageInvalidError(
                    f"{parent!r} is both a file and a folder in the zip",
                    "Rename the file or the folder so that the paths do not clash.",
                    reason="duplicate_path",
                    path=parent,
                )
    return entries, prefix


def _read_small(
    zf: zipfile.ZipFile, entries: _Entries, name: str, limits: PackageLimits
) -> bytes | None:
    if name not in entries:
        return None
    info = entries[name]
    if info.file_size > limits.max_source_bytes:
        raise PackageInvalidError(
            f"{name} is {info.file_size} bytes; the limit is {limits.max_source_bytes}",
            f"Keep {name} small; move data into separate files.",
            reason="source_too_large",
            path=name,
        )
    chunks: list[bytes] = []
    _copy_entry(zf, info, name, limits.max_source_bytes, chunks.append)
    return b"".join(chunks)


def _stream_all(
    zf: zipfile.ZipFile, entries: _Entries, limits: PackageLimits, out_dir: Path | None
) -> tuple[PackageFile, ...]:
    budget = limits.max_total_bytes
    files: list[PackageFile] = []
    for name in sorted(entries):
        info = entries[name]
        if out_dir is None:
            digest, size = _copy_entry(zf, info, name, budget, None)
        else:
            with _create_file(out_dir, name) as sink:
                digest, size = _copy_entry(zf, info, name, budget, sink.write)
        budget -= size
        files.append(PackageFile(path=name, size=size, sha256=digest))
    return tuple(files)


def _copy_entry(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    name: str,
    budget: int,
    sink: Callable[[bytes], object] | None,
) -> tuple[str, int]:
    """Decompress one entry in chunks, hashing it and passing chunks to `sink`;
    enforce the declared size and the remaining total budget."""
    digest = hashlib.sha256()
    size = 0
    try:
        with zf.open(info) as src:
            while chunk := src.read(_CHUNK):
                size += len(chunk)
                if size > info.file_size or size > budget:
                    raise PackageInvalidError(
                        f"entry {name!r} decompresses to more data than its header declares",
                        "The zip is malformed or crafted; re-create it with a standard tool.",
                        reason="zip_bomb",
                        path=name,
                    )
                digest.update(chunk)
                if sink is not None:
                    sink(chunk)
    except _BAD_ZIP as err:
        raise PackageInvalidError(
            f"entry {name!r} is corrupt ({err})",
            "Re-create the zip and upload it again; the file may have been truncated.",
            reason="corrupt",
            path=name,
        ) from err
    if size != info.file_size:
        raise PackageInvalidError(
            f"entry {name!r} holds {size} bytes but its header declares {info.file_size}",
            "The zip is malformed or crafted; re-create it with a standard tool.",
            reason="corrupt",
            path=name,
        )
    return digest.hexdigest(), size


def _create_file(root: Path, name: str) -> BinaryIO:
    target = root.joinpath(*name.split("/"))
    if not target.resolve().is_relative_to(root.resolve()):
        raise PackageInvalidError(
            f"entry {name!r} would be written outside the package folder",
            "Package files must stay inside the package folder.",
            reason="unsafe_path",
            path=name,
        )
    target.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(target, flags, _FILE_MODE)
    os.fchmod(fd, _FILE_MODE)  # exact mode regardless of umask; never setuid/setgid
    return os.fdopen(fd, "wb")


def _tree_hash(files: Iterable[PackageFile]) -> str:
    digest = hashlib.sha256(_HASH_DOMAIN)
    for f in sorted(files, key=lambda f: f.path):
        digest.update(f"{f.path}\0{f.sha256}\n".encode())
    return digest.hexdigest()
