import ctypes
import os
import sys


def run(input_path: str, output_dir: str) -> dict:
    line = "x" * 1023 + "\n"
    for _ in range(3 * 1024):  # 3 MiB through print
        print(line, end="")
    sys.stderr.write(line * 1024)  # 1 MiB on stderr
    os.write(1, (line * 1024).encode())  # 1 MiB straight to fd 1
    libc = ctypes.CDLL(None)
    libc.puts(b"from C puts")
    libc.fflush(None)
    os.system("echo from a child process")
    print("the end")
    return {"printed_mb": 5}
