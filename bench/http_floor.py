"""The floor under the job benchmark: the HTTP calls alone, with nothing behind them.

    python -m bench.http_floor [--seconds 10] [--clients 32]

Serves an app that answers the job benchmark's two calls (a multipart POST of a small
PNG, then a GET of the job) with constant JSON, on the server `clinai up` uses (uvicorn,
httptools, uvloop), and drives it with the job benchmark's client (`bench.jobs.Api` on
the lean keep-alive client of `bench._http`, N concurrent clients). Prints
submit-and-read pairs per second and the CPU they cost per pair (server and client):
what is left for the log, the projection, the executor and the model is the machine's
CPU minus this.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench._http import HttpClient
from bench._proc import cpu_seconds, descendants, wait_listening
from bench.jobs import Api, _png

_JOB = {"id": "job_floor", "status": "succeeded", "result": {}, "outputs": []}


async def _submit(request: Request) -> JSONResponse:
    async with request.form() as form:
        if "input" not in form:
            return JSONResponse({"detail": "input missing"}, 422)
    return JSONResponse({**_JOB, "status": "queued", "seq": 1}, 202)


async def _read(request: Request) -> JSONResponse:
    return JSONResponse(_JOB)


app = Starlette(
    routes=[
        Route("/v1/jobs", _submit, methods=["POST"]),
        Route("/v1/jobs/{job_id}", _read, methods=["GET"]),
    ]
)


async def _drive(url: str, seconds: float, clients: int) -> tuple[int, list[float]]:
    png = _png()
    pairs = 0
    latencies: list[float] = []
    async with HttpClient(url) as http:
        api = Api(http)

        async def pair() -> None:
            started = time.perf_counter()
            await api.job("ver_floor", png)  # the submission, then one read: it succeeded
            latencies.append(time.perf_counter() - started)

        for _ in range(20):  # warm up
            await pair()
        latencies.clear()
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal pairs
            while time.perf_counter() < deadline:
                await pair()
                pairs += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return pairs, latencies


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.api.server",
            "bench.http_floor:app",
            "127.0.0.1",
            str(port),
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_listening(server, port, "the floor server")
        processes = descendants(server.pid)
        server_before = sum(cpu_seconds(p) for p in processes)
        client_before = time.process_time()
        started = time.perf_counter()
        pairs, latencies = asyncio.run(_drive(url, args.seconds, args.clients))
        elapsed = time.perf_counter() - started
        server_cpu = sum(cpu_seconds(p) for p in processes) - server_before
        client_cpu = time.process_time() - client_before
    finally:
        server.terminate()
        server.wait(10)
    print(f"submit + read pairs/s, {args.clients} clients: {pairs / elapsed:8.0f}")
    print(f"pair latency p50 (ms):                {statistics.median(latencies) * 1000:8.2f}")
    print(f"server CPU per pair (ms):             {server_cpu / pairs * 1000:8.2f}")
    print(f"client CPU per pair (ms):             {client_cpu / pairs * 1000:8.2f}")


if __name__ == "__main__":
    main()
