"""A hostile model: after run() returns, a thread of it keeps swapping the folder
`out/d` for a symlink to `params["secret_dir"]` (a host folder outside the job's, which
holds an `admin.key`, the name of a decoy file in `d`) and back, while the host copies
the outputs. The host must never read the secret through it. `params["folder"]` names
`d` otherwise: a warm worker's leftover thread swaps its own job's folder name, so a
later job of the same worker that uses that name too would be raced by it."""

import os
import threading
import time


def _swap(folder: str, secret_dir: str, stop_at: float) -> None:
    time.sleep(0.002)  # the host lists d/ while it is a folder
    while time.monotonic() < stop_at:
        try:
            os.rename(folder, folder + ".real")
            os.symlink(secret_dir, folder)
            time.sleep(0.02)  # ... and opens its files while it is a symlink
            os.unlink(folder)
            os.rename(folder + ".real", folder)
            time.sleep(0.001)
        except OSError:
            return


def run(input_path: str, output_dir: str, params: dict) -> dict:
    folder = os.path.join(output_dir, str(params.get("folder", "d")))
    os.mkdir(folder)
    with open(os.path.join(folder, "admin.key"), "w") as f:
        f.write("decoy")
    chunk = b"x" * 256 * 1024
    for i in range(int(params.get("files", 100))):
        with open(os.path.join(folder, f"f{i:03}.bin"), "wb") as f:
            f.write(chunk)
    stop_at = time.monotonic() + float(params.get("seconds", 10))
    thread = threading.Thread(target=_swap, args=(folder, params["secret_dir"], stop_at))
    thread.daemon = True
    thread.start()
    return {"swapping": True}
