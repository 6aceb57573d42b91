"""The `clinai` command: for operators `up`, `serve <service>`, `admin-key`,
`admin-invite`, `projections rebuild|status`, `tail`; for the people who push models
`login`, `push`, `run`, `predict`, `models`, `versions`, `jobs`, `logs`, `cancel`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec
import uvloop

from events.subjects import AGGREGATES
from services.cli.user import USER_COMMANDS, add_user_commands, run_user_command
from services.embedded import EmbeddedError
from services.embedded.cpu_policy import use_batch_scheduling
from services.settings import Settings, SettingsError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clinai", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run everything on this machine (embedded NATS and Postgres)")
    up.add_argument("--data-dir", type=Path, help="where data lives (default ./.clinai)")
    up.add_argument("--port", type=int, help="API port (default 8000 or CLINAI_PORT)")

    serve = sub.add_parser("serve", help="run one service against external NATS/Postgres")
    serve.add_argument("service", choices=["api", "projector", "builder", "executor", "notifier"])

    sub.add_parser(
        "admin-key",
        help="issue an admin API key and print it once (a deployment's first key, or a new "
        "one when it is lost): needs CLINAI_NATS_URL",
    )

    sub.add_parser(
        "admin-invite",
        help="print a link where the admin sets their dashboard password (works once, for 7 "
        "days; a lost password): needs CLINAI_NATS_URL",
    )

    projections = sub.add_parser("projections", help="manage the read models")
    proj_sub = projections.add_subparsers(dest="action", required=True)
    proj_sub.add_parser("rebuild", help="replay the stream into fresh tables and swap them in")
    proj_sub.add_parser("status", help="how far the read models are; the quarantined events")

    tail = sub.add_parser(
        "tail",
        help="print the event log (reads JetStream directly: CLINAI_NATS_URL, else the NATS "
        "of the local stack `clinai up` runs on the data folder)",
    )
    tail.add_argument("--data-dir", type=Path, help="the local stack's data folder (./.clinai)")
    tail.add_argument("--type", dest="type_glob", help="event type or glob, e.g. 'Job*'")
    tail.add_argument("--aggregate", choices=AGGREGATES, help="one kind of aggregate")
    tail.add_argument("--id", dest="resource_id", help="one aggregate id")
    start = tail.add_mutually_exclusive_group()
    start.add_argument("--since", help="start this long ago: 30s, 10m, 2h, 1d")
    start.add_argument("--from-seq", type=int, help="start at this stream sequence")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    tail.add_argument("--json", action="store_true", help="NDJSON envelopes with seq")
    add_user_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in USER_COMMANDS:
        try:
            return run_user_command(args)
        except SettingsError as err:
            print(f"clinai: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "up":
            from services.embedded.stack import run_stack

            settings = Settings.from_env(data_dir=args.data_dir, port=args.port)
            if settings.sched_batch:
                use_batch_scheduling()  # before anything starts: all of the stack inherits it
            data_dir = settings.data_dir.resolve()
            data_dir.mkdir(parents=True, exist_ok=True)
            asyncio.run(run_stack(msgspec.structs.replace(settings, data_dir=data_dir)))
        elif args.command == "serve":
            return _serve(args.service, Settings.from_env())
        elif args.command == "admin-key":
            from services.embedded.stack import issue_admin_key

            print(asyncio.run(issue_admin_key(Settings.from_env())))
        elif args.command == "admin-invite":
            from services.embedded.stack import invite_admin

            print(asyncio.run(invite_admin(Settings.from_env())))
        elif args.command == "projections":
            from services.projector import rebuild_command, status_command

            command = status_command if args.action == "status" else rebuild_command
            asyncio.run(command(Settings.from_env()))
        elif args.command == "tail":
            return _tail(args, Settings.from_env(data_dir=args.data_dir))
    except SettingsError as err:
        print(f"clinai: {err}", file=sys.stderr)
        return 2
    except EmbeddedError as err:  # says what to do next
        print(f"clinai: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _serve(service: str, settings: Settings) -> int:
    if settings.sched_batch:
        use_batch_scheduling()
    if service == "api":
        from services.api.app import begin_stop, create_app
        from services.api.server import serve_http

        app = create_app(settings)
        serve_http(
            app,
            settings.host,
            settings.port,
            on_stop=lambda: begin_stop(app),
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
        )
        return 0
    if service == "projector":
        from services.projector import run_projector

        uvloop.run(run_projector(settings))
        return 0
    if service == "builder":
        from services.builder.service import run_builder

        uvloop.run(run_builder(settings))
        return 0
    if service == "notifier":
        from services.notifier import run_notifier

        uvloop.run(run_notifier(settings))
        return 0
    from services.executor.service import run_executor

    uvloop.run(run_executor(settings))
    return 0


def _tail(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.tail import TailOptions, parse_duration, run_tail

    servers = settings.nats_servers or [_local_nats_url(settings.data_dir)]
    try:
        options = TailOptions(
            type_glob=args.type_glob,
            aggregate=args.aggregate,
            resource_id=args.resource_id,
            since=parse_duration(args.since) if args.since else None,
            from_seq=args.from_seq,
            follow=args.follow,
            json=args.json,
        )
    except ValueError as err:
        print(f"clinai tail: {err}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_tail(servers, settings.stream_name, options))
    except BrokenPipeError:  # piped into head & co
        sys.stderr.close()
    return 0


def _local_nats_url(data_dir: Path) -> str:
    """The NATS server `clinai up` runs for the stack on `data_dir` (it keeps the
    embedded server's files in <data_dir>/nats, its token in <data_dir>/nats.token)."""
    from services.embedded import running_nats_url
    from services.embedded.credentials import local_nats_token

    url = running_nats_url(data_dir / "nats", local_nats_token(data_dir))
    if url is None:
        raise SettingsError(
            f"CLINAI_NATS_URL is not set and no local stack runs on {data_dir.resolve()}: "
            "start one with `clinai up` (or `make up`), run this in the folder it runs in "
            "or pass its --data-dir, or set CLINAI_NATS_URL=nats://HOST:PORT"
        )
    return url


if __name__ == "__main__":
    sys.exit(main())
