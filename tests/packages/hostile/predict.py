"""A model whose result, output file names and printed log carry HTML and script: the
dashboard must show them as text and run none of it (tests/dashboard/test_browser.py).
Each payload would set window.__pwned if it ever ran."""

import os

PAYLOAD = "<script>window.__pwned = 1</script>"
IMG = "<img src=x onerror=window.__pwned=2>"


def run(input_path: str, output_dir: str) -> dict:
    with open(os.path.join(output_dir, f"{IMG}.txt"), "w") as f:
        f.write(PAYLOAD)
    with open(os.path.join(output_dir, '"><svg onload=window.__pwned=3>.png'), "wb") as f:
        f.write(b"not a png")
    print(PAYLOAD, IMG)
    return {"html": PAYLOAD, "img": IMG, "</pre><script>window.__pwned=4</script>": True}
