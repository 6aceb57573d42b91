import os


def _try_write(path: str) -> str:
    try:
        with open(path, "w") as f:
            f.write("pwned")
        return "written"
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror}"


def run(input_path: str, output_dir: str, params: dict) -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    job_dir = os.path.dirname(output_dir)
    targets = [
        os.path.join(here, "pwned.txt"),
        os.path.join(os.path.dirname(os.path.dirname(os.__file__)), "pwned.txt"),
        "/usr/pwned.txt",
        "/etc/pwned.txt",
        "/pwned.txt",
        os.path.join(os.path.dirname(job_dir), "pwned.txt"),
        os.path.join(job_dir, "in", "pwned.txt"),
        input_path,
        *params.get("host_paths", []),
    ]
    return {"attempts": {path: _try_write(path) for path in targets}}
