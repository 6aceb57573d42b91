"""services.packages: every refusal is a PackageInvalidError with a reason and a hint;
hashes are stable across re-zipping."""

from __future__ import annotations

import hashlib
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import pytest

from services.packages import (
    PackageInfo,
    PackageInvalidError,
    PackageLimits,
    inspect_package,
    unpack_package,
)
from services.packages._sources import normalise_requirements

PREDICT = b"def setup():\n    pass\n\n\ndef run(input_path, output_dir):\n    return {}\n"
REQS = b"pillow==13.0.0\n"
MiB = 1024 * 1024
Files = Mapping[str, bytes | zipfile.ZipInfo]


def make_zip(
    path: Path,
    files: Files,
    *,
    compression: int = zipfile.ZIP_DEFLATED,
    date_time: tuple[int, int, int, int, int, int] = (2024, 1, 1, 0, 0, 0),
    order: list[str] | None = None,
) -> Path:
    """Write a zip; a value may be bytes or a ZipInfo (whose `comment` holds the data)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are a case under test
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name in order or list(files):
                value = files[name]
                if isinstance(value, zipfile.ZipInfo):
                    zf.writestr(value, value.comment)
                else:
                    info = zipfile.ZipInfo(name, date_time=date_time)
                    info.compress_type = compression
                    info.external_attr = (stat.S_IFREG | 0o644) << 16
                    zf.writestr(info, value)
    return path


def base_files(**extra: bytes) -> dict[str, bytes]:
    return {"predict.py": PREDICT, "requirements.txt": REQS, **extra}


def refused(path: Path, limits: PackageLimits | None = None) -> PackageInvalidError:
    with pytest.raises(PackageInvalidError) as exc:
        inspect_package(path, limits or PackageLimits())
    err = exc.value
    assert err.hint and err.message
    return err


# -- happy paths -----------------------------------------------------------------


def test_root_layout(tmp_path: Path) -> None:
    zp = make_zip(tmp_path / "p.zip", base_files(**{"lib/util.py": b"X = 1\n"}))
    info = inspect_package(zp, PackageLimits())
    assert isinstance(info, PackageInfo)
    assert [f.path for f in info.files] == ["lib/util.py", "predict.py", "requirements.txt"]
    assert info.has_setup and info.has_requirements
    assert info.requirements == ("pillow==13.0.0",)
    assert info.total_size == len(PREDICT) + len(REQS) + 6
    assert info.stripped_prefix is None
    assert info.files[1].sha256 == hashlib.sha256(PREDICT).hexdigest()


def test_single_top_folder_is_stripped_and_mac_noise_ignored(tmp_path: Path) -> None:
    root = inspect_package(make_zip(tmp_path / "a.zip", base_files()))
    nested = make_zip(
        tmp_path / "b.zip",
        {
            "model/": b"",
            "model/predict.py": PREDICT,
            "model/requirements.txt": REQS,
            "model/.DS_Store": b"\0junk",
            "__MACOSX/model/._predict.py": b"\0junk",
        },
    )
    info = inspect_package(nested)
    assert info.stripped_prefix == "model"
    assert [f.path for f in info.files] == ["predict.py", "requirements.txt"]
    assert info.package_hash == root.package_hash


def test_hash_stable_across_rezip(tmp_path: Path) -> None:
    files = base_files(**{"a.txt": b"a", "b/c.txt": b"c"})
    first = inspect_package(make_zip(tmp_path / "1.zip", files))
    second = inspect_package(
        make_zip(
            tmp_path / "2.zip",
            files,
            compression=zipfile.ZIP_STORED,
            date_time=(2030, 6, 6, 6, 6, 6),
            order=list(reversed(list(files))),
        )
    )
    assert first == second


def test_code_change_keeps_requirements_hash(tmp_path: Path) -> None:
    first = inspect_package(make_zip(tmp_path / "1.zip", base_files()))
    changed = PREDICT + b"\nX = 2\n"
    second = inspect_package(make_zip(tmp_path / "2.zip", base_files(**{"predict.py": changed})))
    assert second.package_hash != first.package_hash
    assert second.code_hash != first.code_hash
    assert second.requirements_hash == first.requirements_hash


def test_requirements_change_keeps_code_hash(tmp_path: Path) -> None:
    first = inspect_package(make_zip(tmp_path / "1.zip", base_files()))
    files = base_files(**{"requirements.txt": b"pillow==12.0.0\n"})
    second = inspect_package(make_zip(tmp_path / "2.zip", files))
    assert second.code_hash == first.code_hash
    assert second.requirements_hash != first.requirements_hash


def test_requirements_normalisation() -> None:
    text = "\ufeff# deps\n  pillow==13.0.0   # imaging\n\nnumpy>=2 \\\n  ,<3\r\n"
    assert normalise_requirements(text) == ("pillow==13.0.0", "numpy>=2   ,<3")
    # order is significant for pip's resolver, so it is kept (and hashed)
    assert normalise_requirements("a\nb\n") != normalise_requirements("b\na\n")


def test_comment_only_change_keeps_requirements_hash(tmp_path: Path) -> None:
    first = inspect_package(make_zip(tmp_path / "1.zip", base_files()))
    files = base_files(**{"requirements.txt": b"# pinned\n\n  pillow==13.0.0  \n"})
    assert inspect_package(make_zip(tmp_path / "2.zip", files)).requirements_hash == (
        first.requirements_hash
    )


def test_missing_requirements_is_empty(tmp_path: Path) -> None:
    info = inspect_package(make_zip(tmp_path / "p.zip", {"predict.py": PREDICT}))
    assert not info.has_requirements and info.requirements == ()
    assert info.requirements_hash == hashlib.sha256(b"").hexdigest()


def test_run_without_setup(tmp_path: Path) -> None:
    src = b"if True:\n    def run(input_path, output_dir, **params):\n        return {}\n"
    assert not inspect_package(make_zip(tmp_path / "p.zip", {"predict.py": src})).has_setup


def test_unpack_writes_safe_modes(tmp_path: Path) -> None:
    suid = zipfile.ZipInfo("bin/tool.sh")
    suid.external_attr = (stat.S_IFREG | 0o4777) << 16
    suid.comment = b"#!/bin/sh\n"
    zp = make_zip(tmp_path / "p.zip", {**base_files(), "bin/tool.sh": suid})
    dest = tmp_path / "out" / "pkg"
    unpack_package(zp, dest, PackageLimits())
    assert (dest / "predict.py").read_bytes() == PREDICT
    assert stat.S_IMODE((dest / "bin" / "tool.sh").stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / "bin").stat().st_mode) & 0o7000 == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pkg"]


def test_unpack_refuses_non_empty_destination(tmp_path: Path) -> None:
    zp = make_zip(tmp_path / "p.zip", base_files())
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "x").write_text("x")
    with pytest.raises(FileExistsError):
        unpack_package(zp, dest)


def test_unpack_failure_leaves_nothing(tmp_path: Path) -> None:
    zp = make_zip(tmp_path / "p.zip", {"predict.py": b"def run(:\n"})
    with pytest.raises(PackageInvalidError):
        unpack_package(zp, tmp_path / "out" / "pkg")
    assert list((tmp_path / "out").iterdir()) == []


# -- refusals --------------------------------------------------------------------


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "p.zip"
    path.write_bytes(b"this is not a zip file at all")
    assert refused(path).reason == "not_zip"


def test_truncated_zip(tmp_path: Path) -> None:
    data = make_zip(tmp_path / "p.zip", base_files()).read_bytes()
    (tmp_path / "p.zip").write_bytes(data[: len(data) // 2])
    assert refused(tmp_path / "p.zip").reason == "not_zip"


def test_empty_zip_has_no_predict(tmp_path: Path) -> None:
    assert refused(make_zip(tmp_path / "p.zip", {})).reason == "no_predict"


def test_no_predict(tmp_path: Path) -> None:
    zp = make_zip(tmp_path / "p.zip", {"requirements.txt": REQS, "sub/predict.py": PREDICT})
    assert refused(zp).reason == "no_predict"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (b"def run(:\n", "predict_syntax"),
        (b"x = 1\0\n", "predict_syntax"),
        (b"def setup():\n    pass\n", "predict_no_run"),
        (b"class M:\n    def run(self, a, b):\n        pass\n", "predict_no_run"),
        (b"async def run(input_path, output_dir):\n    pass\n", "predict_no_run"),
        (b"run = lambda a, b: {}\n", "predict_no_run"),
        (b"def run(input_path):\n    pass\n", "predict_run_signature"),
        (b"def run(a, b, *, c):\n    pass\n", "predict_run_signature"),
    ],
)
def test_bad_predict(tmp_path: Path, source: bytes, reason: str) -> None:
    assert refused(make_zip(tmp_path / "p.zip", {"predict.py": source})).reason == reason


def test_predict_is_never_imported(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    src = f"open({str(marker)!r}, 'w').close()\n\ndef run(a, b):\n    pass\n".encode()
    inspect_package(make_zip(tmp_path / "p.zip", {"predict.py": src}))
    assert not marker.exists()


@pytest.mark.parametrize(
    "name",
    ["/etc/passwd", "../evil.py", "a/../../evil.py", "a\\..\\evil.py", "C:/evil.py", "a//b.py"],
)
def test_unsafe_paths(tmp_path: Path, name: str) -> None:
    err = refused(make_zip(tmp_path / "p.zip", base_files(**{name: b"x"})))
    assert err.reason == "unsafe_path"


def test_symlink(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("data")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    link.comment = b"/etc/passwd"
    zp = make_zip(tmp_path / "p.zip", {**base_files(), "data": link})
    err = refused(zp)
    assert (err.reason, err.path) == ("symlink", "data")
    with pytest.raises(PackageInvalidError):
        unpack_package(zp, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_duplicate_and_clashing_paths(tmp_path: Path) -> None:
    nfc, nfd = "caf\u00e9.py", "cafe\u0301.py"
    assert refused(make_zip(tmp_path / "1.zip", base_files(**{nfc: b"1", nfd: b"2"}))).reason == (
        "duplicate_path"
    )
    clash = base_files(**{"a": b"file", "a/b": b"nested"})
    assert refused(make_zip(tmp_path / "2.zip", clash)).reason == "duplicate_path"


def test_unsupported_compression(tmp_path: Path) -> None:
    zp = make_zip(tmp_path / "p.zip", base_files(), compression=zipfile.ZIP_BZIP2)
    assert refused(zp).reason == "unsupported_compression"


def test_too_many_entries(tmp_path: Path) -> None:
    files = base_files(**{f"f{i}.txt": b"x" for i in range(10)})
    err = refused(make_zip(tmp_path / "p.zip", files), PackageLimits(max_entries=5))
    assert err.reason == "too_many_entries"


def test_zip_over_size_limit(tmp_path: Path) -> None:
    files = base_files(**{"noise.bin": zlib.compress(bytes(range(256)) * 64)})
    zp = make_zip(tmp_path / "p.zip", files)
    assert refused(zp, PackageLimits(max_zip_bytes=200)).reason == "too_large"


def test_declared_total_over_limit(tmp_path: Path) -> None:
    zp = make_zip(tmp_path / "p.zip", base_files(**{"w.bin": b"\1" * (2 * MiB)}))
    limits = PackageLimits(max_total_bytes=1 * MiB, max_ratio=1e9)
    assert refused(zp, limits).reason == "too_much_data"


def test_zip_bomb_by_ratio(tmp_path: Path) -> None:
    zp = make_zip(tmp_path / "p.zip", base_files(**{"zeros.bin": bytes(64 * MiB)}))
    assert zp.stat().st_size < 200_000  # ~1000:1
    err = refused(zp)
    assert (err.reason, err.path) == ("zip_bomb", "zeros.bin")


def _patch_sizes(path: Path, name: bytes, *, size: int, crc: int | None = None) -> None:
    """Rewrite the uncompressed size (and optionally the CRC) of entry `name` in both
    its local header and its central-directory record."""
    data = bytearray(path.read_bytes())
    local = data.find(b"PK\x03\x04" + b"\x14\x00")
    central = data.find(b"PK\x01\x02")
    while data[central + 46 : central + 46 + len(name)] != name:
        central = data.find(b"PK\x01\x02", central + 4)
    while data[local + 30 : local + 30 + len(name)] != name:
        local = data.find(b"PK\x03\x04", local + 4)
    struct.pack_into("<L", data, local + 22, size)
    struct.pack_into("<L", data, central + 24, size)
    if crc is not None:
        struct.pack_into("<L", data, local + 14, crc)
        struct.pack_into("<L", data, central + 16, crc)
    path.write_bytes(bytes(data))


def test_header_understating_size_is_caught(tmp_path: Path) -> None:
    zp = make_zip(tmp_path / "p.zip", base_files(**{"zeros.bin": bytes(16 * MiB)}))
    _patch_sizes(zp, b"zeros.bin", size=1000)
    limits = PackageLimits(max_total_bytes=1 * MiB)
    assert zipfile.ZipFile(zp).getinfo("zeros.bin").file_size == 1000  # declared sizes pass
    err = refused(zp, limits)
    assert (err.reason, err.path) == ("corrupt", "zeros.bin")
    with pytest.raises(PackageInvalidError):
        unpack_package(zp, tmp_path / "out", limits)
    assert not (tmp_path / "out").exists()


def test_lying_header_never_yields_more_than_declared(tmp_path: Path) -> None:
    """Even with the CRC forged to match, decompression stops at the declared size."""
    zp = make_zip(tmp_path / "p.zip", base_files(**{"zeros.bin": bytes(16 * MiB)}))
    _patch_sizes(zp, b"zeros.bin", size=1000, crc=zlib.crc32(bytes(1000)))
    unpack_package(zp, tmp_path / "out", PackageLimits(max_total_bytes=1 * MiB))
    assert (tmp_path / "out" / "zeros.bin").stat().st_size == 1000


def test_header_overstating_size_is_caught(tmp_path: Path) -> None:
    zp = make_zip(tmp_path / "p.zip", base_files(**{"small.txt": b"hello"}))
    _patch_sizes(zp, b"small.txt", size=5000)
    err = refused(zp)
    assert (err.reason, err.path) == ("corrupt", "small.txt")


def test_overlapping_entries(tmp_path: Path) -> None:
    zp = make_zip(tmp_path / "p.zip", base_files(**{"b.txt": b"b" * 100}))
    data = bytearray(zp.read_bytes())
    central = data.find(b"PK\x01\x02")
    second = data.find(b"PK\x01\x02", central + 4)
    struct.pack_into("<L", data, second + 42, 0)  # point entry 2 at entry 1's data
    zp.write_bytes(bytes(data))
    assert refused(zp).reason == "zip_bomb"


def test_requirements_refusals(tmp_path: Path) -> None:
    include = base_files(**{"requirements.txt": b"-r other.txt\n"})
    assert refused(make_zip(tmp_path / "1.zip", include)).reason == ("requirements_local_reference")
    local = base_files(**{"requirements.txt": b"-e ./mypkg\n"})
    assert refused(make_zip(tmp_path / "2.zip", local)).reason == "requirements_local_reference"
    # A direct reference or an option naming a host path: pip read it on the build host.
    for n, line in enumerate(
        (b"six @ file:///etc/passwd", b"six [x] @FILE:/srv", b"--find-links /srv/w", b"-i file:/x")
    ):
        hidden = base_files(**{"requirements.txt": b"numpy\n" + line + b"\n"})
        found = refused(make_zip(tmp_path / f"local{n}.zip", hidden))
        assert found.reason == "requirements_local_reference", line
    remote = normalise_requirements("-f https://download.pytorch.org/whl\nsix @ https://h/s.whl")
    assert remote == ("-f https://download.pytorch.org/whl", "six @ https://h/s.whl")
    latin = base_files(**{"requirements.txt": "caf\u00e9\n".encode("latin-1")})
    assert refused(make_zip(tmp_path / "3.zip", latin)).reason == "requirements_encoding"


def test_too_many_requirement_lines_are_refused(tmp_path: Path) -> None:
    """Before: 200,000 lines were accepted and pip's resolver spun a core for 16 minutes."""
    lines = b"".join(b"pkg%d\n" % n for n in range(PackageLimits().max_requirements + 1))
    err = refused(make_zip(tmp_path / "many.zip", base_files(**{"requirements.txt": lines})))
    assert err.reason == "requirements_too_many"
    assert err.message == "requirements.txt has 1001 requirement lines; the limit is 1000"
    few = base_files(**{"requirements.txt": b"# a comment\n" * 5000 + b"six\n"})
    assert inspect_package(make_zip(tmp_path / "few.zip", few)).requirements == ("six",)


def test_limits_validate_arguments() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        PackageLimits(max_entries=0)
