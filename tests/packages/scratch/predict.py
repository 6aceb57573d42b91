"""Uses the worker's temporary folder the way libraries do: tempfile, HOME caches.
params: mode "use" (write, leave a file behind, report what an earlier job left) or
"fill" (write more than /tmp holds). setup() leaves a file in /tmp."""

import os
import tempfile


def setup() -> None:  # what setup() unpacks into /tmp stays for the worker's jobs
    with open(os.path.join(tempfile.gettempdir(), "from-setup"), "w") as f:
        f.write("weights")


def run(input_path: str, output_dir: str, params: dict) -> dict:
    if params.get("mode") == "fill":
        fs = os.statvfs(tempfile.gettempdir())
        chunk = b"x" * (1024 * 1024)
        with open(os.path.join(tempfile.gettempdir(), "big"), "wb") as f:
            for _ in range(fs.f_blocks * fs.f_frsize // len(chunk) + 2):
                f.write(chunk)
                f.flush()
        return {"filled": True}
    found = sorted(os.listdir(tempfile.gettempdir()))
    fd, _path = tempfile.mkstemp()
    os.write(fd, b"mkstemp")
    os.close(fd)
    with tempfile.NamedTemporaryFile() as named:
        named.write(b"named")
        named.flush()
    cache = os.path.join(os.path.expanduser("~"), ".cache", "somelib")
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, "weights.bin"), "wb") as f:
        f.write(b"cached")
    with open(os.path.join(tempfile.gettempdir(), f"left-by-{params['marker']}"), "w") as f:
        f.write("leftover")
    locked = tempfile.mkdtemp()
    open(os.path.join(locked, "inside"), "w").close()
    os.chmod(locked, 0o500)  # the runner must still be able to empty /tmp
    closed = os.path.join(tempfile.mkdtemp(), "closed")
    os.makedirs(os.path.join(closed, "deeper"))
    os.chmod(closed, 0)
    return {
        "found": found,
        "tmpdir": tempfile.gettempdir(),
        "home": os.path.expanduser("~"),
        "pid": os.getpid(),
    }
