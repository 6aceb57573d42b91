def run(input_path: str, output_dir: str, params: dict) -> dict:
    """A result of `params["size"]` characters (and a non-ASCII tail)."""
    return {"blob": "x" * int(params.get("size", 10)), "end": "fin ✓"}
