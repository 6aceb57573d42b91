import os
import time


def run(input_path: str, output_dir: str, params: dict) -> dict:
    if params.get("mode") == "write":
        with open(os.path.join(output_dir, "secret.txt"), "w") as f:
            f.write(params["secret"])
        deadline = time.monotonic() + float(params.get("hold_s", 0))
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return {"wrote": True}
    job_root = os.path.dirname(os.path.dirname(output_dir))
    seen: dict[str, str] = {}
    for path in [
        os.path.join(job_root, params["other_job"], "out", "secret.txt"),
        *params.get("host_paths", []),
    ]:
        try:
            with open(path) as f:
                seen[path] = "read: " + f.read()
        except OSError as err:
            seen[path] = f"{type(err).__name__}: {err.strerror}"
    return {"job_root_listing": sorted(os.listdir(job_root)), "seen": seen}
