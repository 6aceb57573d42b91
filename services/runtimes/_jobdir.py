"""Per-job directories on the host: created before a job, harvested and removed after."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

__all__ = ["collect_and_remove", "collect_outputs", "prepare_job_dir", "read_tail"]


def prepare_job_dir(job_dir: Path, input_path: Path, uid: int | None) -> tuple[Path, Path, Path]:
    """`<job_dir>/in/<input>` (read-only for the model), `out/` and `log` (the model's).
    Returns the host paths of the input, the output directory and the log."""
    job_dir.mkdir()  # its parent, the worker's directory, exists
    (job_dir / "in").mkdir()
    out = job_dir / "out"
    out.mkdir()
    log = job_dir / "log"
    log.touch()
    target = job_dir / "in" / input_path.name
    shutil.copyfile(input_path, target)
    os.chmod(target, 0o444)
    for path in (job_dir, job_dir / "in"):
        os.chmod(path, 0o755)
    if uid is not None:
        os.chown(out, uid, uid)
        os.chown(log, uid, uid)
    return target, out, log


def collect_outputs(out: Path, dest: Path) -> list[str]:
    """Copy the regular files under `out` to `dest`; never follows a symlink (the model
    could point one at a host file). Returns the relative paths copied."""
    copied: list[str] = []
    dest.mkdir(parents=True, exist_ok=True)
    for dirpath, dirs, files in os.walk(out, followlinks=False):
        rel_dir = Path(dirpath).relative_to(out)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(dirpath, d))]
        for name in files:
            source = os.path.join(dirpath, name)
            try:
                fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue  # a symlink or something that vanished
            with os.fdopen(fd, "rb") as src:
                if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                    continue
                (dest / rel_dir).mkdir(parents=True, exist_ok=True)
                with open(dest / rel_dir / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            copied.append(str(rel_dir / name))
    return copied


def collect_and_remove(out: Path, dest: Path, job_dir: Path) -> list[str]:
    """`collect_outputs(out, dest)`, then remove `job_dir` (whether or not that failed)."""
    try:
        return collect_outputs(out, dest)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def read_tail(path: Path, limit: int) -> str:
    """The last `limit` bytes of a log, marked when truncated; "" if it does not exist."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except OSError:
        return ""
    text = data.decode(errors="replace")
    if size > limit:
        return f"[... {size - limit} earlier bytes omitted ...]\n{text}"
    return text
