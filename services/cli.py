"""The `clinai` command: `up`, `serve <service>`, `projections rebuild`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from services.settings import Settings, SettingsError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clinai", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run everything on this machine (embedded NATS and Postgres)")
    up.add_argument("--data-dir", type=Path, help="where data lives (default ./.clinai)")
    up.add_argument("--port", type=int, help="API port (default 8000 or CLINAI_PORT)")

    serve = sub.add_parser("serve", help="run one service against external NATS/Postgres")
    serve.add_argument("service", choices=["api", "projector", "builder", "executor"])

    projections = sub.add_parser("projections", help="manage the read models")
    proj_sub = projections.add_subparsers(dest="action", required=True)
    proj_sub.add_parser("rebuild", help="replay the stream into fresh tables and swap them in")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "up":
            from services.stack import run_stack

            settings = Settings.from_env(data_dir=args.data_dir, port=args.port)
            data_dir = settings.data_dir.resolve()
            data_dir.mkdir(parents=True, exist_ok=True)
            asyncio.run(run_stack(msgspec.structs.replace(settings, data_dir=data_dir)))
        elif args.command == "serve":
            return _serve(args.service, Settings.from_env())
        elif args.command == "projections":
            from services.projector import rebuild_command

            asyncio.run(rebuild_command(Settings.from_env()))
    except SettingsError as err:
        print(f"clinai: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _serve(service: str, settings: Settings) -> int:
    if service == "api":
        from granian import Granian
        from granian.constants import Interfaces, Loops

        Granian(
            "services.api.app:create_app_from_env",
            factory=True,
            address=settings.host,
            port=settings.port,
            interface=Interfaces.ASGI,
            loop=Loops.uvloop,
            log_access=False,
        ).serve()
        return 0
    if service == "projector":
        from services.projector import run_projector

        asyncio.run(run_projector(settings))
        return 0
    if service == "builder":
        from services.builder.service import run_builder

        asyncio.run(run_builder(settings))
        return 0
    from services.executor.service import run_executor

    asyncio.run(run_executor(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
