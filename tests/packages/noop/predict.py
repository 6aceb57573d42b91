import os

CALLS = {"setup": 0}


def setup() -> None:
    CALLS["setup"] += 1
    print("setup ran")


def run(input_path: str, output_dir: str) -> dict:
    with open(input_path, "rb") as f:
        data = f.read()
    with open(os.path.join(output_dir, "echo.txt"), "wb") as f:
        f.write(data)
    print("hello from run")
    return {"bytes": len(data), "setup_calls": CALLS["setup"], "pid": os.getpid()}
