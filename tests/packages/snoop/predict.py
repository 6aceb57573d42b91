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
    seen: dict[str, str] = {}
    for path in params.get("host_paths", []):
        try:
            with open(path) as f:
                seen[path] = "read: " + f.read()
        except OSError as err:
            seen[path] = f"{type(err).__name__}: {err.strerror}"
    return {
        "out_listing": sorted(os.listdir(output_dir)),
        "in_listing": sorted(os.listdir(os.path.dirname(input_path))),
        "seen": seen,
    }
