def run(input_path: str, output_dir: str) -> dict:
    return {"ok": True}
