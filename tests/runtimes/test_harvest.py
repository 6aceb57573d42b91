"""Copying a job's outputs (`_harvest.collect_outputs`): never through a symlink, even one
swapped in while it copies; within the output limits and the deadline; with the model's
own permissions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.runtimes._harvest import (
    HarvestError,
    HarvestTimeoutError,
    OutputLimitError,
    collect_outputs,
)
from services.runtimes.base import OutputLimits

SECRET = b"the platform's admin key"
LIMITS = OutputLimits()


@pytest.fixture
def job_root(tmp_path: Path) -> Path:
    root = tmp_path / "worker"
    (root / "out").mkdir(parents=True)
    return root


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    folder = tmp_path / "copies"
    folder.mkdir()
    return folder


def _secret_dir(tmp_path: Path) -> Path:
    secret = tmp_path / "host-secrets"
    secret.mkdir()
    (secret / "admin.key").write_bytes(SECRET)
    return secret


_SWAPPER = """
import os, sys, time
folder, secret = sys.argv[1], sys.argv[2]
while True:
    os.rename(folder, folder + ".real")
    os.symlink(secret, folder)
    time.sleep(0.005)
    os.unlink(folder)
    os.rename(folder + ".real", folder)
    time.sleep(0.001)
"""


@pytest.fixture
def swapping(job_root: Path, tmp_path: Path) -> Iterator[None]:
    """A folder of out/ holding an admin.key decoy among 100 other files, which another
    process keeps swapping for a symlink to a host folder holding the real admin.key,
    and back."""
    secret = _secret_dir(tmp_path)
    folder = job_root / "out" / "d"
    folder.mkdir()
    (folder / "admin.key").write_bytes(b"decoy")
    for i in range(100):
        (folder / f"f{i:03}.bin").write_bytes(b"x" * 4096)
    swapper = subprocess.Popen([sys.executable, "-c", _SWAPPER, str(folder), str(secret)])
    try:
        yield
    finally:
        swapper.kill()
        swapper.wait()


def test_a_folder_swapped_for_a_symlink_while_copying_never_yields_its_target(
    job_root: Path, dest: Path, swapping: None
) -> None:
    seen = 0
    for _ in range(20):
        for copy in collect_outputs(job_root, dest, limits=LIMITS):
            content = copy.path.read_bytes()
            assert content != SECRET, copy.name
            seen += content == b"decoy"
            copy.path.unlink()
    assert seen > 0  # the race was run: the decoy was copied while the folder was swapped


def test_symlinks_fifos_and_a_symlinked_out_folder_are_not_outputs(
    job_root: Path, dest: Path, tmp_path: Path
) -> None:
    secret = _secret_dir(tmp_path)
    out = job_root / "out"
    (out / "real.txt").write_bytes(b"real")
    (out / "link.txt").symlink_to(secret / "admin.key")
    (out / "dir-link").symlink_to(secret)
    os.mkfifo(out / "fifo")
    copies = collect_outputs(job_root, dest, limits=LIMITS)
    assert [(c.name, c.path.read_bytes()) for c in copies] == [("real.txt", b"real")]

    os.rename(out, job_root / "out.real")
    (job_root / "out").symlink_to(secret)
    assert collect_outputs(job_root, dest, limits=LIMITS) == []


def test_nested_outputs_keep_their_relative_names(job_root: Path, dest: Path) -> None:
    (job_root / "out" / "a" / "b").mkdir(parents=True)
    (job_root / "out" / "a" / "b" / "c.txt").write_bytes(b"c")
    (job_root / "out" / "top.txt").write_bytes(b"top")
    copies = collect_outputs(job_root, dest, limits=LIMITS)
    assert sorted((c.name, c.path.read_bytes()) for c in copies) == [
        ("a/b/c.txt", b"c"),
        ("top.txt", b"top"),
    ]


def test_the_scan_stops_at_one_entry_over_the_count_limit(job_root: Path, dest: Path) -> None:
    out = job_root / "out"
    for i in range(300):
        os.close(os.open(out / f"e{i}", os.O_CREAT | os.O_WRONLY, 0o644))
    seen: list[str] = []
    real_stat = os.stat

    def counting_stat(name: str, **kwargs: object) -> os.stat_result:
        seen.append(name)
        return real_stat(name, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch, pytest.raises(OutputLimitError) as caught:
        patch.setattr(os, "stat", counting_stat)
        collect_outputs(job_root, dest, limits=OutputLimits(max_files=100))
    assert "more than 100 files and folders" in caught.value.message
    assert "CLINAI_MAX_OUTPUT_FILES" in caught.value.message
    assert len(seen) == 100  # the 101st entry ended the scan before it was even examined
    assert list(dest.iterdir()) == []  # nothing is left of a failed harvest


def test_folders_count_against_the_count_limit(job_root: Path, dest: Path) -> None:
    for i in range(11):
        (job_root / "out" / f"d{i}").mkdir()
    with pytest.raises(OutputLimitError, match="CLINAI_MAX_OUTPUT_FILES"):
        collect_outputs(job_root, dest, limits=OutputLimits(max_files=10))


def test_a_sparse_file_counts_at_its_apparent_size(job_root: Path, dest: Path) -> None:
    (job_root / "out" / "small.bin").write_bytes(b"x" * 100)
    with open(job_root / "out" / "sparse.bin", "wb") as f:
        f.truncate(1000 * 1000 * 1000)  # no block on disk
    with pytest.raises(OutputLimitError, match="CLINAI_MAX_OUTPUT_FILE_BYTES") as caught:
        collect_outputs(job_root, dest, limits=OutputLimits())
    assert "'sparse.bin' is larger than 268435456 bytes" in caught.value.message
    assert list(dest.iterdir()) == []


def test_the_total_size_is_limited(job_root: Path, dest: Path) -> None:
    for name in ("a.bin", "b.bin", "c.bin"):
        (job_root / "out" / name).write_bytes(b"x" * 400)
    limits = OutputLimits(max_total_bytes=1000)
    with pytest.raises(OutputLimitError, match="CLINAI_MAX_OUTPUT_BYTES"):
        collect_outputs(job_root, dest, limits=limits)
    assert list(dest.iterdir()) == []
    (job_root / "out" / "c.bin").unlink()
    assert len(collect_outputs(job_root, dest, limits=limits)) == 2


def test_copying_stops_at_the_deadline(job_root: Path, dest: Path) -> None:
    (job_root / "out" / "a.txt").write_bytes(b"a")
    with pytest.raises(HarvestTimeoutError, match="timeout"):
        collect_outputs(job_root, dest, limits=LIMITS, deadline=time.monotonic() - 1)
    assert list(dest.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: files are read as another uid")
def test_files_are_read_with_the_models_permissions_not_roots(job_root: Path, dest: Path) -> None:
    uid = 62999
    os.chown(job_root / "out", uid, uid)
    mine = job_root / "out" / "mine.txt"
    mine.write_bytes(b"the model's")
    os.chown(mine, uid, uid)
    assert [c.name for c in collect_outputs(job_root, dest, limits=LIMITS, uid=uid)] == ["mine.txt"]
    # A root-only file in out/ (a hard link to a host file, say) is not the model's to hand
    # over: the copy fails instead of reading it as root.
    (job_root / "out" / "roots.txt").write_bytes(SECRET)
    os.chmod(job_root / "out" / "roots.txt", 0o600)
    with pytest.raises(HarvestError, match="cannot be read"):
        collect_outputs(job_root, dest, limits=LIMITS, uid=uid)
    assert len(list(dest.iterdir())) == 1  # only the first harvest's copy
    # the thread's own identity is back: root reads it
    assert (job_root / "out" / "roots.txt").read_bytes() == SECRET
