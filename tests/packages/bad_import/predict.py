import this_module_does_not_exist  # noqa: F401


def run(input_path: str, output_dir: str) -> dict:
    return {}
