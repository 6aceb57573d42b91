"""Writes the outputs its params describe: `files` (each {"name" or "name_hex", "size",
"sparse"}) and `empty_files` empty files named e0, e1, ...; then raises if `fail`."""

import os


def run(input_path: str, output_dir: str, params: dict) -> dict:
    out = os.fsencode(output_dir)
    for spec in params.get("files", []):
        name = bytes.fromhex(spec["name_hex"]) if "name_hex" in spec else spec["name"].encode()
        path = os.path.join(out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            if spec.get("sparse"):
                f.truncate(spec["size"])
            else:
                f.write(b"x" * spec.get("size", 0))
    for i in range(params.get("empty_files", 0)):
        os.close(os.open(os.path.join(output_dir, f"e{i}"), os.O_CREAT | os.O_WRONLY, 0o644))
    if params.get("fail"):
        raise ValueError("failed after writing its outputs")
    return {"written": True}
