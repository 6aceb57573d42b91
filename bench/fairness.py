"""One owner floods the queue: another owner's single job, during the flood and idle.

    python -m bench.fairness [--flood 500] [--samples 100] [--window N] [--rate-limited]
        [--set CLINAI_NAME=VALUE ...]

On a `clinai up` stack (as `bench.jobs` starts it), users A and B each get a private
copy of the no-op model (`bench/noop-model`). Idle: B runs `--samples` jobs one after
another (submit, then long poll until it has ended). Flood: A submits `--flood` no-op
jobs as fast as 32 connections carry them, without waiting for them; meanwhile B runs
jobs one after another (with `--rate-limited`, at most one every 25 ms, inside the
default rate of 50 commands a second that B's key is held to as well), counted under
"while A submits" until A's last submission is
answered, then under "while A's backlog drains" until A's last job has ended. Floods
repeat until B has `--samples` jobs measured while a backlog drains (while A submits or
its backlog drains, `--rate-limited`). Printed per phase:
B's latency p50/p99 in all, to the submission's answer, in the executor's queue and
from the job's end at the executor to the API's answer (read models and long poll);
how long A's flood took (what B would wait in a first-come queue); the no-op job's run
time at the executor; and the target: p99 <= 2 x idle p99 + one job's run time.

The per-key rate limit is lifted (it would spread A's flood out), unless
`--rate-limited`. `--window N` sets `CLINAI_EXECUTOR_WINDOW`; `--window 8` (the
executor's slots, nothing held ahead) takes jobs first come, first served.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import datetime
from typing import Any

from bench._http import HttpClient
from bench.jobs import NOOP, Api, UpStack, _pct, _png
from events import TERMINAL_JOB_STATUSES
from services.packages import zip_folder

__all__ = ["main"]

_FLOOD_CONNECTIONS = 32
_ENDED = TERMINAL_JOB_STATUSES
_PARTS = ("total", "submit", "queued", "seen")


async def _user(admin: Api, url: str, name: str) -> tuple[HttpClient, Api]:
    created = await admin.call("POST", "/v1/users", json={"name": f"{name}-{uuid.uuid4().hex[:6]}"})
    http = HttpClient(url, headers={"Authorization": f"Bearer {created['api_key']['secret']}"})
    api = Api(http)
    await api.call("GET", "/v1/me", params={"after_seq": str(created["seq"])})
    return http, api


async def _noop_version(api: Api) -> str:
    model = await api.call("POST", "/v1/models", json={"name": f"noop-{uuid.uuid4().hex[:8]}"})
    version = await api.wait_built(await api.upload(model["id"], zip_folder(NOOP)))
    return str(version["id"])


async def _flood(
    api: Api, version_id: str, png: bytes, jobs: int, rate_limited: bool
) -> list[tuple[str, int]]:
    """Submit `jobs` jobs over many connections; their (id, seq), in the order answered.
    `rate_limited`: a submission refused with 429 is sent again a second later."""
    headers, body = api.form(version_id, png)
    ids: list[tuple[str, int]] = []
    remaining = jobs

    async def submitter() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            while True:
                reply = await api.http.request("POST", "/v1/jobs", headers=headers, body=body)
                if reply.status != 429 or not rate_limited:
                    break
                await asyncio.sleep(1.0)  # as Retry-After says
            if reply.status >= 400:
                raise RuntimeError(f"POST /v1/jobs: {reply.status} {reply.json()}")
            created = reply.json()
            ids.append((created["id"], created["seq"]))

    await asyncio.gather(*(submitter() for _ in range(_FLOOD_CONNECTIONS)))
    return ids


class _Sample:
    """One of B's jobs: seconds to the submission's answer, in the executor's queue,
    from its end at the executor to the API's answer saying so (the read models and the
    long poll), and in all (submit to ended, seen through the API)."""

    def __init__(self, submit: float, queued: float, seen: float, total: float) -> None:
        self.submit, self.queued, self.seen, self.total = submit, queued, seen, total


_PACED_S = 0.025  # B's jobs start at most this often when its key is rate-limited too


async def _job(api: Api, version_id: str, png: bytes, paced: bool = False) -> _Sample:
    headers, body = api.form(version_id, png)
    started = time.perf_counter()
    try:
        return await _timed_job(api, headers, body, started)
    finally:
        if paced:
            await asyncio.sleep(max(0.0, started + _PACED_S - time.perf_counter()))


async def _timed_job(api: Api, headers: dict[str, str], body: bytes, started: float) -> _Sample:
    created = await api.call("POST", "/v1/jobs", headers=headers, body=body)
    submit = time.perf_counter() - started
    job = created
    while job["status"] not in _ENDED:
        job = await api.call("GET", f"/v1/jobs/{created['id']}?wait=30&after_seq={created['seq']}")
    total = time.perf_counter() - started
    seen = time.time() - datetime.fromisoformat(job["finished_at"]).timestamp()
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['status']}: {job.get('error_message')}")
    queued = float((job.get("timings") or {}).get("queued_s", 0.0))
    return _Sample(submit, queued, seen, total)


async def _ended(api: Api, job_id: str, seq: int) -> dict[str, Any]:
    while True:
        job = await api.call(
            "GET", f"/v1/jobs/{job_id}", params={"wait": "30", "after_seq": str(seq)}
        )
        if job["status"] in _ENDED:
            return dict(job)


async def _run_seconds(api: Api, job_ids: list[str]) -> list[float]:
    """Started -> finished of each job, at the executor (its slot's hold time)."""
    seconds = []
    for job_id in job_ids:
        job = await api.call("GET", f"/v1/jobs/{job_id}")
        if job.get("started_at") and job.get("finished_at"):
            started = datetime.fromisoformat(job["started_at"])
            finished = datetime.fromisoformat(job["finished_at"])
            seconds.append((finished - started).total_seconds())
    return seconds


async def _measure(
    url: str, key: str, flood: int, samples: int, rate_limited: bool
) -> dict[str, float]:
    png = _png()
    out: dict[str, float] = {}
    async with HttpClient(url, headers={"Authorization": f"Bearer {key}"}) as admin_http:
        admin = Api(admin_http)
        a_http, a = await _user(admin, url, "flooder")
        b_http, b = await _user(admin, url, "bystander")
        try:
            a_version, b_version = await _noop_version(a), await _noop_version(b)
            for _ in range(8):  # warm both owners' workers
                await asyncio.gather(a.job(a_version, png), b.job(b_version, png))
            phases: dict[str, list[_Sample]] = {"idle": [], "submitting": [], "draining": []}
            phases["idle"] = [await _job(b, b_version, png, rate_limited) for _ in range(samples)]
            drains: list[float] = []
            run_s: list[float] = []
            # Rate-limited, A's backlog hardly outlives its submissions: count both phases.
            counted = ("submitting", "draining") if rate_limited else ("draining",)
            while sum(len(phases[p]) for p in counted) < samples:
                started = time.perf_counter()
                submitting = asyncio.ensure_future(_flood(a, a_version, png, flood, rate_limited))
                await asyncio.sleep(0.05)  # B starts once A's flood is under way
                while not submitting.done():
                    phases["submitting"].append(await _job(b, b_version, png, rate_limited))
                ids = submitting.result()
                last = asyncio.ensure_future(_ended(a, *ids[-1]))
                while not last.done():
                    phases["draining"].append(await _job(b, b_version, png, rate_limited))
                await last
                drains.append(time.perf_counter() - started)
                run_s += await _run_seconds(a, [job for job, _ in ids[:: max(1, len(ids) // 100)]])
        finally:
            await a_http.close()
            await b_http.close()
    for name, sampled in phases.items():
        out[f"{name}_samples"] = float(len(sampled))
        for part in _PARTS:
            values = [getattr(s, part) for s in sampled] or [0.0]
            out[f"{name}_{part}_p50_ms"] = statistics.median(values) * 1000
            out[f"{name}_{part}_p99_ms"] = _pct(values, 0.99) * 1000
    out["flood_drain_s"] = statistics.median(drains)
    out["run_ms"] = statistics.median(run_s) * 1000 if run_s else 0.0
    out["target_ms"] = 2 * out["idle_total_p99_ms"] + out["run_ms"]
    return out


def _print(flood: int, result: dict[str, float]) -> None:
    print(
        f"B's no-op job (ms), p50 / p99{'':22}{'total':>16}{'submit answered':>18}"
        f"{'executor queue':>17}{'ended to seen':>17}{'jobs':>6}"
    )
    labels = {
        "idle": "idle stack",
        "submitting": f"while A submits {flood} jobs",
        "draining": "while A's backlog drains",
    }
    for phase, label in labels.items():
        cells = "".join(
            f"{result[f'{phase}_{part}_p50_ms']:>8.1f} /{result[f'{phase}_{part}_p99_ms']:>7.1f}"
            for part in _PARTS
        )
        print(f"  {label:48}{cells}{result[f'{phase}_samples']:>6.0f}")
    print(f"A's flood, first submission to last job ended: {result['flood_drain_s']:.2f} s")
    print(
        f"no-op job's run time at the executor (median started -> finished): "
        f"{result['run_ms']:.1f} ms"
    )
    target = result["target_ms"]
    for phase in ("submitting", "draining"):
        p99 = result[f"{phase}_total_p99_ms"]
        verdict = "met" if p99 <= target else "NOT met"
        print(
            f"target p99 <= 2 x idle p99 + run time = {target:.1f} ms, "
            f"{labels[phase]}: {p99:.1f} ms, {verdict}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runtime", choices=["process", "docker"], default="process")
    parser.add_argument("--flood", type=int, default=500, help="jobs A submits at once")
    parser.add_argument("--samples", type=int, default=100, help="B's jobs per measurement")
    parser.add_argument("--window", type=int, default=None, help="CLINAI_EXECUTOR_WINDOW")
    parser.add_argument(
        "--rate-limited",
        action="store_true",
        help="keep the default per-key rate limit (A retries after 429) instead of lifting it",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="CLINAI_NAME=VALUE",
        help="a setting for the stack (repeatable)",
    )
    args = parser.parse_args(argv)
    env: dict[str, str] = dict(setting.split("=", 1) for setting in args.set)
    if args.rate_limited:
        env["CLINAI_RATE_LIMIT_PER_S"] = env["CLINAI_RATE_LIMIT_BURST"] = ""
    if args.window is not None:
        env["CLINAI_EXECUTOR_WINDOW"] = str(args.window)
    stack = UpStack(args.runtime, env=env)
    try:
        with stack:
            result = asyncio.run(
                _measure(stack.url, stack.key, args.flood, args.samples, args.rate_limited)
            )
    finally:
        stack.remove()
    _print(args.flood, result)


if __name__ == "__main__":
    main()
