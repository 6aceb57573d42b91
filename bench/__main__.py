"""Run every benchmark with its defaults, one after the other."""

from __future__ import annotations

from bench import http_floor, jobs, pipeline


def main() -> None:
    print("== event log and projections (bench.pipeline) ==", flush=True)
    pipeline.main([])
    print("\n== builds and jobs through the API (bench.jobs) ==", flush=True)
    jobs.main([])
    print("\n== the HTTP calls alone, nothing behind them (bench.http_floor) ==", flush=True)
    http_floor.main([])


if __name__ == "__main__":
    main()
