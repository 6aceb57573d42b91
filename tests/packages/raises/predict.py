def run(input_path: str, output_dir: str) -> dict:
    raise ValueError("this model always fails")
