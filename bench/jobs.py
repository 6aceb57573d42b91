"""Builds and jobs through the HTTP API of a real `clinai up`, per runtime.

    python -m bench.jobs [--runtime process|docker|both] [--jobs 200] [--clients 32]
                         [--seconds 10] [--blob-backend file|s3 [--s3-endpoint URL]]
    python -m bench.jobs --ab-tree OTHER_CHECKOUT [--rounds 6] [--jobs 100] [--seconds 4]

Prints, per runtime: warm job latency (HTTP submit -> terminal status visible through the
API) p50/p99 for a no-op model (`bench/noop-model`: `run` returns {}), for an echo model
(copies its input to an output and prints a line) and for example-model on a small PNG;
jobs/s with N concurrent clients on the no-op model, over --seconds once its workers are
warm. Jobs are submitted, then long-polled (`GET /v1/jobs/{id}?wait=`); the no-op model
is also measured submitted with `?wait=`, one call a job. Then the first job after READY
(cold worker); build times: first build of example-model, a rebuild after a code-only
change, an identical re-upload; and the CPU each no-op job costs during the jobs/s run,
by process of the stack (the docker runtime's containers are not in that tree) and for
this benchmark's own client; and a no-op job on a 10 MB input (stored, fetched by the
executor). `--blob-backend s3` measures each runtime on the `file` backend and then on
`s3` (a moto server started for the run unless `--s3-endpoint` names one, with
`--s3-bucket` and the caller's AWS credentials), and prints the s3/file ratios.
The client is a lean HTTP/1.1 keep-alive client on httptools
(`bench._http`, one connection per concurrent call, each job's multipart body built once),
so that its own CPU, which shares the machine with the stack, is small, the way wrk would
measure the platform's capacity; what it does use is still reported, as "benchmark
client". Medians over repetitions; these machines are shared and noisy. Warm figures
are taken once the disk has written out what the builds left (`_flush_disk`); the first
job after READY is measured before that, as a user would see it right after a build.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from orjson import dumps
from PIL import Image

from bench._http import HttpClient, multipart
from bench._proc import cpu_by_kind
from bench._s3 import s3_stack_env
from events import TERMINAL_JOB_STATUSES
from services.packages import zip_folder

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example-model"
NOOP = ROOT / "bench" / "noop-model"  # run() returns {}: the platform's own cost
# Copies its input to an output and prints a line: one output and one log to store.
ECHO = ROOT / "tests" / "packages" / "noop"
# Where `make up` keeps its data: the same disk, not /tmp, whose speed differs by host.
DATA_PARENT = ROOT / ".clinai" / "bench"
_ENDED = TERMINAL_JOB_STATUSES


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def _flush_disk() -> None:
    """Write out what a build (a virtualenv: thousands of files) and the stack's start
    left dirty before measuring warm jobs. On this machine's ext4 (no journal), creating
    a file skips the inodes freed nearby in the last 60 s, or 360 s while their table
    block is dirty: writing it out shortens that transient of a fresh stack, which is
    not the job path of a running one. Deletions made before the benchmark (another
    stack's cleanup, a CI run) still slow it for minutes."""
    os.sync()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Api:
    """The calls the benchmark makes, over one `HttpClient` (a keep-alive connection per
    concurrent call)."""

    def __init__(self, http: HttpClient) -> None:
        self.http = http
        self._forms: dict[tuple[str, bytes], tuple[dict[str, str], bytes]] = {}

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Any:
        if json is not None:
            headers, body = {**(headers or {}), "Content-Type": "application/json"}, dumps(json)
        target = f"{path}?{urlencode(params)}" if params else path
        r = await self.http.request(method, target, headers=headers, body=body)
        result = r.json()
        if r.status >= 400:
            raise RuntimeError(f"{method} {path}: {r.status} {result}")
        return result

    async def upload(self, model_id: str, package: bytes) -> dict[str, Any]:
        content_type, body = multipart({}, {"package": ("p.zip", package, "application/zip")})
        return dict(
            await self.call(
                "POST",
                f"/v1/models/{model_id}/versions",
                headers={"Content-Type": content_type},
                body=body,
            )
        )

    async def wait_built(self, version: dict[str, Any]) -> dict[str, Any]:
        while True:
            body = await self.call(
                "GET", f"/v1/versions/{version['id']}", params={"after_seq": str(version["seq"])}
            )
            if body["status"] in ("ready", "failed"):
                if body["status"] == "failed":
                    raise RuntimeError(f"build failed: {body.get('failure_reason')}")
                return dict(body)
            await asyncio.sleep(0.02)  # polling interval

    def form(self, version_id: str, png: bytes) -> tuple[dict[str, str], bytes]:
        """The submission's headers and multipart body, built once per version and input."""
        form = self._forms.get((version_id, png))
        if form is None:
            content_type, body = multipart(
                {"version": version_id}, {"input": ("in.png", png, "image/png")}
            )
            form = self._forms[version_id, png] = ({"Content-Type": content_type}, body)
        return form

    async def job(self, version_id: str, png: bytes, *, wait_on_submit: bool = False) -> float:
        """Seconds from submit to a terminal status visible through the API: a submission,
        then long polls; or, `wait_on_submit`, a submission that waits (`?wait=`)."""
        started = time.perf_counter()
        headers, body = self.form(version_id, png)
        params = {"wait": "30"} if wait_on_submit else None
        created = await self.call("POST", "/v1/jobs", params=params, headers=headers, body=body)
        job = created
        while job["status"] not in _ENDED:
            job = await self.call(
                "GET", f"/v1/jobs/{created['id']}?wait=30&after_seq={created['seq']}"
            )
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job['status']}: {job.get('error_message')}")
        return time.perf_counter() - started


class UpStack:
    """`clinai up` in a fresh data directory on a free port. Leaving the `with` stops it;
    `remove()` deletes its data directory."""

    def __init__(
        self,
        runtime: str,
        parent: Path = DATA_PARENT,
        env: Mapping[str, str] | None = None,
        tree: Path = ROOT,
    ) -> None:
        self.runtime = runtime
        self.tree = tree
        self.env = dict(env or {})
        parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{runtime}-", dir=parent))
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.key = ""

    def __enter__(self) -> UpStack:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLINAI_")}
        env["CLINAI_RUNTIME"] = self.runtime
        env["CLINAI_WORKERS_PER_VERSION"] = "2"
        env["CLINAI_DOCKER_BASE_IMAGE"] = os.environ.get(
            "CLINAI_DOCKER_BASE_IMAGE", "clinai/python:3.11-slim"
        )
        # The rate limiter stays on the path, with room for the benchmark's clients.
        env["CLINAI_RATE_LIMIT_PER_S"] = env["CLINAI_RATE_LIMIT_BURST"] = "1000000"
        env.update(self.env)
        self.proc = subprocess.Popen(
            [str(self._clinai()), "up", "--data-dir", str(self.dir / "data"), "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=self.tree,
        )  # fmt: skip
        assert self.proc.stdout is not None
        lines = []
        for line in self.proc.stdout:
            lines.append(line.strip())
            if line.startswith("Press Ctrl-C"):
                break
        self.url = f"http://127.0.0.1:{port}"
        self.key = (self.dir / "data" / "admin.key").read_text().strip()
        return self

    def _clinai(self) -> Path:
        """This interpreter's `clinai` for this tree, the other tree's own for another."""
        if self.tree == ROOT:
            return Path(sys.executable).with_name("clinai")
        return self.tree / ".venv" / "bin" / "clinai"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


async def _measure(
    url: str, key: str, jobs: int, clients: int, seconds: float, stack_pid: int
) -> dict[str, float]:
    png = _png()
    out: dict[str, float] = {}
    async with HttpClient(url, headers={"Authorization": f"Bearer {key}"}) as http:
        api = Api(http)
        model = await api.call("POST", "/v1/models", json={"name": f"b-{uuid.uuid4().hex[:8]}"})

        # A unique file per run: the package is new to this stack and to the engine's image
        # cache (pip's own cache and docker's dependency layer may still be warm).
        first = zip_folder(EXAMPLE, {"bench-run.txt": uuid.uuid4().hex})
        started = time.perf_counter()
        example = await api.wait_built(await api.upload(model["id"], first))
        out["build_first_s"] = time.perf_counter() - started

        out["cold_first_job_s"] = await api.job(example["id"], png)
        _flush_disk()
        example_lat = [await api.job(example["id"], png) for _ in range(max(20, jobs // 5))]
        out["example_p50_ms"] = statistics.median(example_lat) * 1000
        out["example_p99_ms"] = _pct(example_lat, 0.99) * 1000

        started = time.perf_counter()
        changed = zip_folder(EXAMPLE, {"CHANGELOG.txt": f"code change {uuid.uuid4()}"})
        await api.wait_built(await api.upload(model["id"], changed))
        out["rebuild_code_only_s"] = time.perf_counter() - started

        reuploads = []
        for _ in range(5):
            started = time.perf_counter()
            await api.wait_built(await api.upload(model["id"], changed))
            reuploads.append(time.perf_counter() - started)
        out["identical_reupload_s"] = statistics.median(reuploads)

        echo = await api.wait_built(await api.upload(model["id"], zip_folder(ECHO)))
        _flush_disk()
        await api.job(echo["id"], png)  # warm the worker
        echo_lat = [await api.job(echo["id"], png) for _ in range(max(20, jobs // 2))]
        out["echo_p50_ms"] = statistics.median(echo_lat) * 1000
        out["echo_p99_ms"] = _pct(echo_lat, 0.99) * 1000

        noop = await api.wait_built(await api.upload(model["id"], zip_folder(NOOP)))
        _flush_disk()
        await api.job(noop["id"], png)  # warm the worker
        noop_lat = [await api.job(noop["id"], png) for _ in range(jobs)]
        out["noop_p50_ms"] = statistics.median(noop_lat) * 1000
        out["noop_p99_ms"] = _pct(noop_lat, 0.99) * 1000

        big = os.urandom(10 * 1024 * 1024)
        await api.job(noop["id"], big)
        big_lat = [await api.job(noop["id"], big) for _ in range(max(5, jobs // 20))]
        out["input_10mb_p50_ms"] = statistics.median(big_lat) * 1000
        out["input_10mb_p99_ms"] = _pct(big_lat, 0.99) * 1000

        noop_waiting = [await api.job(noop["id"], png, wait_on_submit=True) for _ in range(jobs)]
        out["noop_wait_p50_ms"] = statistics.median(noop_waiting) * 1000
        out["noop_wait_p99_ms"] = _pct(noop_waiting, 0.99) * 1000

        # Throughput over a fixed window, once every worker the version may have is warm.
        await asyncio.gather(*(api.job(noop["id"], png) for _ in range(clients)))
        for wait_on_submit, suffix in ((False, ""), (True, "_wait")):
            rate, cpu_ms = await _throughput(
                api, noop["id"], png, clients, seconds, stack_pid, wait_on_submit
            )
            out[f"noop_jobs_per_s{suffix}"] = rate
            out[f"cpu_ms_per_job{suffix}"] = sum(cpu_ms.values())
            if not wait_on_submit:  # the breakdown is of the submit-then-poll run
                out.update({f"cpu_ms_per_job:{kind}": ms for kind, ms in cpu_ms.items()})
    return out


async def _throughput(
    api: Api,
    version_id: str,
    png: bytes,
    clients: int,
    seconds: float,
    stack_pid: int,
    wait_on_submit: bool,
) -> tuple[float, dict[str, float]]:
    """Jobs/s with `clients` each running one job after another for `seconds`, and the
    CPU (ms) per job by kind of process."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await api.job(version_id, png, wait_on_submit=wait_on_submit)
            done += 1

    cpu_before, client_before = cpu_by_kind(stack_pid), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    rate = done / (time.perf_counter() - started)
    cpu = cpu_by_kind(stack_pid)
    cpu.subtract(cpu_before)
    cpu["benchmark client"] = time.process_time() - client_before
    return rate, {kind: used / max(done, 1) * 1000 for kind, used in cpu.items()}


def _print(results: dict[str, dict[str, float]]) -> None:
    rows = [
        ("warm no-op job, p50 (ms)", "noop_p50_ms", "{:.1f}"),
        ("warm no-op job, p99 (ms)", "noop_p99_ms", "{:.1f}"),
        ("warm echo job, p50 (ms)", "echo_p50_ms", "{:.1f}"),
        ("warm echo job, p99 (ms)", "echo_p99_ms", "{:.1f}"),
        ("warm example-model job, p50 (ms)", "example_p50_ms", "{:.1f}"),
        ("warm example-model job, p99 (ms)", "example_p99_ms", "{:.1f}"),
        ("warm no-op job, submit ?wait=, p50 (ms)", "noop_wait_p50_ms", "{:.1f}"),
        ("warm no-op job, submit ?wait=, p99 (ms)", "noop_wait_p99_ms", "{:.1f}"),
        ("no-op jobs/s, concurrent clients", "noop_jobs_per_s", "{:.0f}"),
        ("  the same, submit ?wait=", "noop_jobs_per_s_wait", "{:.0f}"),
        ("no-op job on a 10 MB input, p50 (ms)", "input_10mb_p50_ms", "{:.1f}"),
        ("no-op job on a 10 MB input, p99 (ms)", "input_10mb_p99_ms", "{:.1f}"),
        ("first job after READY (s)", "cold_first_job_s", "{:.2f}"),
        ("first build of example-model (s)", "build_first_s", "{:.2f}"),
        ("rebuild after a code-only change (s)", "rebuild_code_only_s", "{:.2f}"),
        ("identical re-upload, median of 5 (s)", "identical_reupload_s", "{:.3f}"),
    ]
    names = list(results)
    kinds = sorted({k for r in results.values() for k in r if k.startswith("cpu_ms_per_job:")})
    rows.append(("CPU per no-op job, all processes (ms)", "cpu_ms_per_job", "{:.1f}"))
    rows += [(f"  {k.split(':', 1)[1]}", k, "{:.2f}") for k in kinds]
    rows.append(("  all processes, submit ?wait=", "cpu_ms_per_job_wait", "{:.1f}"))
    print(f"{'':40}" + "".join(f"{n:>14}" for n in names))
    for label, key, fmt in rows:
        cells = (fmt.format(results[n][key]) if key in results[n] else "-" for n in names)
        print(f"{label:40}" + "".join(f"{c:>14}" for c in cells))
    for name in names:
        file_name = name.replace("/s3", "/file")
        if name.endswith("/s3") and file_name in results:
            s3, file = results[name], results[file_name]
            print(f"\ns3/file ratio ({name.split('/')[0]}):")
            for label, key in _RATIOS:
                if file.get(key):
                    print(f"  {label:38}{s3[key] / file[key]:>14.2f}")


_RATIOS = (
    ("warm no-op job p50", "noop_p50_ms"),
    ("warm example-model job p50", "example_p50_ms"),
    ("warm example-model job p99", "example_p99_ms"),
    ("no-op jobs/s", "noop_jobs_per_s"),
    ("10 MB input job p50", "input_10mb_p50_ms"),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runtime", choices=["process", "docker", "both"], default="process")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the jobs/s run")
    parser.add_argument(
        "--data-parent", type=Path, default=DATA_PARENT, help="folder for the stacks' data"
    )
    parser.add_argument(
        "--nats-sync-ab",
        metavar="A,B",
        help="instead: the no-op job path under two CLINAI_NATS_SYNC values (e.g. always,2m), "
        "one stack each, measured in alternating bursts (--rounds)",
    )
    parser.add_argument(
        "--ab-tree",
        metavar="DIR",
        type=Path,
        help="instead: this code's no-op job path against another checkout's (with its own "
        ".venv), one stack each, measured in alternating bursts (--rounds)",
    )
    parser.add_argument(
        "--set",
        metavar="CLINAI_NAME=VALUE",
        action="append",
        default=[],
        help="with --ab-tree: a setting for both stacks (repeatable)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="bursts per side (A/B)")
    parser.add_argument(
        "--blob-backend",
        choices=["file", "s3"],
        default="file",
        help="s3: each runtime on the file backend, then on s3, and their ratios",
    )
    parser.add_argument("--s3-endpoint", help="an S3 endpoint to use instead of a moto server")
    parser.add_argument("--s3-bucket", help="with --s3-endpoint: an existing bucket")
    args = parser.parse_args(argv)
    if args.nats_sync_ab or args.ab_tree:
        from bench import _ab

        if args.ab_tree:
            _ab.run_ab(_ab.tree_stacks(args.ab_tree, args), args)
        else:
            _ab.run_ab(_ab.sync_stacks(args.nats_sync_ab.split(","), args), args)
        return
    runtimes = ["process", "docker"] if args.runtime == "both" else [args.runtime]
    backends = ["file", "s3"] if args.blob_backend == "s3" else ["file"]
    results = {}
    stacks: list[UpStack] = []
    try:
        with contextlib.ExitStack() as s3:
            for runtime in runtimes:
                for backend in backends:
                    env = {}
                    if backend == "s3":
                        env = s3.enter_context(s3_stack_env(args.s3_endpoint, args.s3_bucket))
                    name = runtime if backends == ["file"] else f"{runtime}/{backend}"
                    stacks.append(UpStack(runtime, args.data_parent, env=env))
                    with stacks[-1] as stack:
                        results[name] = asyncio.run(
                            _measure(
                                stack.url,
                                stack.key,
                                args.jobs,
                                args.clients,
                                args.seconds,
                                stack.pid,
                            )
                        )
    finally:
        # Deleted at the end, not between runtimes: on ext4 without a journal (this
        # machine's disk) creating a file costs many times more for minutes after
        # thousands of nearby deletions, and one stack's cleanup would slow the next.
        for stack in stacks:
            stack.remove()
    _print(results)


if __name__ == "__main__":
    main()
