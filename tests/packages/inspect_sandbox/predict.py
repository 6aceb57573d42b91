import os


def run(input_path: str, output_dir: str) -> dict:
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs", "Uid"):
                status[key] = value.strip()
    import resource

    return {
        "uid": os.getuid(),
        "pid": os.getpid(),
        "status": status,
        "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0],
        "as": resource.getrlimit(resource.RLIMIT_AS)[0],
        "root": sorted(os.listdir("/")),
        "cwd": os.getcwd(),
    }
