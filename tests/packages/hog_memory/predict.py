def run(input_path: str, output_dir: str) -> dict:
    chunks = []
    for _ in range(256):  # up to 16 GiB in 64 MiB steps
        chunks.append(bytearray(64 * 1024 * 1024))
    return {"allocated_mb": 64 * len(chunks)}
