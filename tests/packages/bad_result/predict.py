def run(input_path: str, output_dir: str, params: dict) -> dict:
    if params.get("kind") == "list":
        return [1, 2, 3]  # type: ignore[return-value]
    return {"value": object()}
