import socket


def _try(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=3):
            return "connected"
    except OSError as err:
        return f"{type(err).__name__}: {err}"


def run(input_path: str, output_dir: str, params: dict) -> dict:
    try:
        socket.getaddrinfo("pypi.org", 443)
        dns = "resolved"
    except OSError as err:
        dns = f"{type(err).__name__}: {err}"
    return {
        "internet": _try("1.1.1.1", 443),
        "dns": dns,
        "loopback": _try("127.0.0.1", int(params["port"])),
    }
