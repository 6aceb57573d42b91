"""A model that leaves a thread writing into out/ after run(): the thread numbers its
ticks and appends each number to out/ticks.log, reopened every time (a log emptied
away is made again). A tick written into a log already removed is noted (`unlinked`):
the host emptied out/ between the open and the write, and nobody can read it.

run() writes `files` outputs of 256 KiB into out/data/ and starts the thread (once per
worker, for `seconds`); with `report` it returns, once the thread has ticked during
this job, the thread's count and those ticks."""

import os
import threading
import time

_state: dict = {"ticks": 0, "unlinked": [], "thread": None}


def _tick(output_dir: str, stop_at: float, first: threading.Event) -> None:
    path = os.path.join(output_dir, "ticks.log")
    while time.monotonic() < stop_at:
        number = _state["ticks"]
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, b"%d\n" % number)
                if os.fstat(fd).st_nlink == 0:
                    _state["unlinked"].append(number)
            finally:
                os.close(fd)
        except OSError:
            return
        _state["ticks"] = number + 1
        first.set()
        time.sleep(0.0002)


def run(input_path: str, output_dir: str, params: dict) -> dict:
    thread = _state["thread"]
    if params.get("report"):
        seen = _state["ticks"]
        deadline = time.monotonic() + 10
        while _state["ticks"] < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.001)  # a tick of this job is in out/ticks.log
        return {
            "ticks": _state["ticks"],
            "unlinked": list(_state["unlinked"]),
            "alive": thread is not None and thread.is_alive(),
        }
    os.mkdir(os.path.join(output_dir, "data"))
    chunk = b"x" * 256 * 1024
    for i in range(int(params.get("files", 40))):
        with open(os.path.join(output_dir, "data", f"f{i:03}.bin"), "wb") as f:
            f.write(chunk)
    if thread is None:
        stop_at = time.monotonic() + float(params.get("seconds", 30))
        first = threading.Event()
        thread = threading.Thread(target=_tick, args=(output_dir, stop_at, first), daemon=True)
        thread.start()
        _state["thread"] = thread
        first.wait(10)  # out/ticks.log exists when run() returns
    return {"started": True}
