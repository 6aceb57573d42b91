import os
import time


def run(input_path: str, output_dir: str) -> dict:
    with open(os.path.join(output_dir, "started"), "w") as f:
        f.write("started")
    time.sleep(3600)
    return {}
