"""Reports what the sandbox shows of the host: its mount table, the processes in /proc
with their command lines, and the paths it was handed."""

import os


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError as err:
        return f"unreadable: {err}"


def run(input_path: str, output_dir: str) -> dict:
    pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    return {
        "mountinfo": _read("/proc/self/mountinfo"),
        "pids": pids,
        "cmdlines": {str(pid): _read(f"/proc/{pid}/cmdline") for pid in pids},
        "paths": [input_path, output_dir, os.getcwd()],
    }
