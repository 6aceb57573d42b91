import six


def run(input_path: str, output_dir: str) -> dict:
    return {"six": six.__version__}
