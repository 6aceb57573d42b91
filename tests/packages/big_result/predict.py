import os


def run(input_path: str, output_dir: str, params: dict) -> dict:
    """A result of `params["size"]` characters (and a non-ASCII tail), and
    `params["outputs"]` files with long names."""
    for i in range(int(params.get("outputs", 0))):
        folder = os.path.join(output_dir, "d" * 200, "e" * 200)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{i:04d}-" + "f" * 200), "w") as f:
            f.write(str(i))
    return {"blob": "x" * int(params.get("size", 10)), "end": "fin ✓"}
