import os
import time


def run(input_path: str, output_dir: str, params: dict) -> dict:
    """Sleeps `params["sleep_s"]`, then copies the input to `copy.bin`."""
    time.sleep(float(params.get("sleep_s", 0)))
    with open(input_path, "rb") as src, open(os.path.join(output_dir, "copy.bin"), "wb") as out:
        out.write(src.read())
    return {"slept": True}
