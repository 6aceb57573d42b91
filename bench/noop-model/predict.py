"""The benchmark's no-op model: it reads nothing, writes nothing and prints nothing,
so a job's time is the platform's own."""


def run(input_path: str, output_dir: str) -> dict:
    return {}
