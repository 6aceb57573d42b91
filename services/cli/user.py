"""The commands for the people who push models, added to the one `clinai` parser:
`login`, `push`, `run`, `predict`, `models`, `versions`, `jobs`, `logs`, `cancel`.
Each talks to the API named by `clinai login` (or `CLINAI_API_URL`/`CLINAI_API_KEY`),
except `predict`, which needs no server."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from services.cli._client import Api, open_api
from services.cli._config import ApiConfig, load_config, save_config
from services.cli._errors import CliError
from services.cli._ui import Ui

__all__ = ["USER_COMMANDS", "add_user_commands", "run_user_command"]

USER_COMMANDS = frozenset(
    {"login", "push", "run", "predict", "models", "versions", "jobs", "logs", "cancel"}
)


def add_user_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output (JSON)")

    login = sub.add_parser("login", help="keep the API address and your key (file mode 0600)")
    login.add_argument("--url", help="the API address (default: CLINAI_API_URL, the one kept, "
                       "or http://127.0.0.1:8000)")  # fmt: skip
    login.add_argument("--key-stdin", action="store_true", help="read the key from stdin")

    push = sub.add_parser("push", parents=[common], help="check, upload and build a model folder")
    push.add_argument("folder", type=Path)
    push.add_argument("--model", help="the model's name (made if you have none of that name; "
                      "default: the folder's name)")  # fmt: skip

    inputs_help = "the inputs: name=value, name=@file for a file"
    run = sub.add_parser("run", parents=[common], help="run a job on a model or version")
    run.add_argument("target", metavar="MODEL_OR_VERSION")
    run.add_argument("inputs", nargs="*", metavar="NAME=VALUE", help=inputs_help)
    run.add_argument("--wait", action="store_true", help="follow the job until it ends")
    run.add_argument(
        "-o", "--output", type=Path, metavar="DIR", help="download the outputs here (waits)"
    )
    run.add_argument("--timeout", type=float, metavar="S", help="the job's timeout in seconds")
    run.add_argument(
        "--deadline",
        type=float,
        metavar="S",
        help="abort the job if it has not ended this many seconds from now (queued: aborted; "
        "running: canceled)",
    )

    predict = sub.add_parser(
        "predict", parents=[common], help="run a model folder here, in the sandbox, no server"
    )
    predict.add_argument("folder", type=Path)
    predict.add_argument("inputs", nargs="*", metavar="NAME=VALUE", help=inputs_help)
    predict.add_argument("-o", "--output", type=Path, default=Path("outputs"), metavar="DIR",
                         help="write the outputs here (default ./outputs)")  # fmt: skip
    predict.add_argument("--timeout", type=float, metavar="S", help="the job's timeout in seconds")

    sub.add_parser("models", parents=[common], help="your models (and public ones)")
    versions = sub.add_parser("versions", parents=[common], help="a model's versions")
    versions.add_argument("model", metavar="MODEL")
    jobs = sub.add_parser("jobs", parents=[common], help="your jobs, newest first")
    jobs.add_argument(
        "--status", help="only these: queued, running, succeeded, failed, canceled, aborted"
    )
    jobs.add_argument("--limit", type=int, default=50, help="at most this many (1 to 200)")
    logs = sub.add_parser("logs", parents=[common], help="a build's log or what a job printed")
    logs.add_argument("target", metavar="JOB_OR_VERSION")
    logs.add_argument("-f", "--follow", action="store_true", help="until the build or job ends")
    cancel = sub.add_parser("cancel", parents=[common], help="cancel a job")
    cancel.add_argument("job", metavar="JOB")


def run_user_command(args: argparse.Namespace) -> int:
    ui = Ui(json=getattr(args, "json", False))
    try:
        if args.command == "login":
            return asyncio.run(_login(ui, _login_config(args.url, args.key_stdin)))
        if args.command == "predict":
            from services.cli.predict import predict

            return asyncio.run(
                predict(ui, args.folder, args.inputs, out_dir=args.output, timeout_s=args.timeout)
            )
        return asyncio.run(_with_api(load_config(), _command(args, ui)))
    except CliError as err:
        message, code = err.message, err.code
    except aiohttp.ClientError as err:  # a connection cut while talking to the API
        message, code = f"the connection to the API failed: {err!r}; try again", 1
    except OSError as err:  # a file that cannot be read or written
        message, code = (f"{err.strerror}: {err.filename}" if err.filename else str(err)), 1
    ui.err.print(f"clinai {args.command}: {message}", markup=False, style="red")
    return code


def _command(args: argparse.Namespace, ui: Ui) -> Callable[[Api], Awaitable[int]]:
    from services.cli import listing
    from services.cli.push import push
    from services.cli.run import run

    match args.command:
        case "push":
            name = args.model or args.folder.resolve().name
            return lambda api: push(api, ui, args.folder, name)
        case "run":
            return lambda api: run(
                api, ui, args.target, args.inputs, wait=args.wait, out_dir=args.output,
                timeout_s=args.timeout,
                deadline_s=args.deadline,
            )  # fmt: skip
        case "models":
            return lambda api: listing.models(api, ui)
        case "versions":
            return lambda api: listing.versions(api, ui, args.model)
        case "jobs":
            return lambda api: listing.jobs(api, ui, args.status, args.limit)
        case "logs":
            return lambda api: listing.logs(api, ui, args.target, args.follow)
        case _:
            return lambda api: listing.cancel(api, ui, args.job)


async def _with_api(config: ApiConfig, command: Callable[[Api], Awaitable[int]]) -> int:
    async with open_api(config) as api:
        return await command(api)


def _login_config(url: str | None, key_stdin: bool) -> ApiConfig:
    """The address (asked for on a terminal) and the key (asked for without echo, or
    read from stdin)."""
    known = load_config(need_key=False)
    if url is None and not key_stdin and sys.stdin.isatty():
        url = input(f"API address [{known.api_url}]: ").strip() or None
    url = (url or known.api_url).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CliError(f"{url!r} is not an http(s) address, e.g. http://127.0.0.1:8000")
    key = sys.stdin.readline().strip() if key_stdin else getpass.getpass("API key: ").strip()
    if not key:
        raise CliError(
            "no key given: paste the key `clinai up` printed, or one from POST /v1/users"
        )
    return ApiConfig(api_url=url, api_key=key)


async def _login(ui: Ui, config: ApiConfig) -> int:
    """Keep the config once the key works."""
    url = config.api_url
    async with open_api(config) as api:
        me = await api.get("/v1/me")
    path = save_config(config)
    admin = " (admin)" if me.get("is_admin") else ""
    ui.say(f"logged in to {url} as {me['user_id']}{admin}; kept in {path}")
    return 0
