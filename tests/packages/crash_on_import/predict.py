import ctypes

ctypes.string_at(0)  # segfaults while being imported


def run(input_path: str, output_dir: str) -> dict:
    return {}
