"""Every setting of every service, read from the environment in this one module.

Explicit arguments (CLI flags) override the environment; the result is one frozen
Struct passed down through constructors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from events import ClinaiError
from services.embedded.nats import validate_sync

__all__ = ["Settings", "SettingsError"]

_DEBIAN_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_MAX_RESULT_INLINE_BYTES = 256 * 1024
_MAX_RESULT_BYTES = 15 * 1024 * 1024


def _decode_path(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str | Path):
        return Path(value)
    raise NotImplementedError(f"cannot read {kind!r} from {value!r}")


class SettingsError(ClinaiError, ValueError):
    """A setting has a value ClinAI cannot use; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    data_dir: Path = Path(".clinai")
    # Infrastructure: None means "start the embedded one under data_dir". nats_url may
    # list the servers of a cluster, comma-separated: a client connects to any of them.
    nats_url: str | None = None
    database_url: str | None = None
    stream_name: str = "CLINAI"
    stream_replicas: int = 1
    # The embedded NATS's JetStream sync_interval: "always" fsyncs each append before it
    # is acknowledged (survives a power loss); a duration such as "2m" flushes that often.
    nats_sync: str = "always"
    # HTTP API
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None  # how clients reach the API; signed URLs use it
    max_package_bytes: int = 512 * 1024 * 1024
    max_input_bytes: int = 100 * 1024 * 1024
    # An input stored for a submission whose job was never appended is removed once it
    # is this old, by a sweep every input_sweep_interval_s in each API process.
    input_orphan_age_s: float = 3600.0
    input_sweep_interval_s: float = 900.0
    # Direct uploads (POST /v1/uploads): one unused after upload_ttl_s is removed.
    upload_ttl_s: float = 24 * 3600.0
    # Inputs by URL, fetched by the executor (at most max_input_bytes, within
    # input_url_timeout_s) through the webhooks' address guard; these CIDRs are exempt.
    input_url_timeout_s: float = 60.0
    input_url_allow_networks: str = ""
    read_your_writes_timeout_s: float = 5.0
    max_long_poll_s: float = 60.0
    # A request's head (request line and headers): larger ones are answered 431.
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    # A command's body that sends nothing for this long is answered 408 (its key's slot
    # and the connection are freed); a slow body that keeps coming is not cut short.
    body_idle_timeout_s: float = 60.0
    # Read models: while concurrent work comes in, the projector commits at most this
    # often (more events per transaction, a little later); a job run alone never waits.
    projection_busy_interval_s: float = 0.02
    # /readyz: not ready once the read models lack an event more than this many events
    # behind the log's last one that was stored more than ready_projection_stall_s ago.
    ready_projection_lag: int = 0
    ready_projection_stall_s: float = 15.0
    # Processes run under SCHED_BATCH: a woken one does not preempt a busy one (see
    # services/embedded/cpu_policy.py).
    sched_batch: bool = True
    # Blob store
    blob_backend: Literal["file", "s3"] = "file"
    blob_dir: Path | None = None  # default: data_dir / "blobs"
    signing_key: str | None = None  # default: generated once into data_dir
    # The s3 backend: credentials come from the usual AWS sources (environment, profile,
    # instance role), never from here. s3_endpoint_url: empty for AWS S3; where the
    # services reach MinIO or another S3-compatible service. s3_public_endpoint_url: where
    # clients reach it (presigned URLs), when that differs.
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = None
    s3_bucket: str = "clinai"
    s3_region: str = "us-east-1"
    s3_prefix: str = ""  # keys are stored under it in the bucket
    # Builds and jobs
    runtime: Literal["process", "docker"] = "process"
    pip_index_url: str | None = None
    pip_extra_index_url: str | None = None
    ca_bundle: Path | None = None
    unsafe_no_sandbox: bool = False
    job_timeout_s: float = 60.0
    job_timeout_max_s: float = 3600.0
    # A job's deadline (deadline_s or Cancel-After, seconds from submission) is at most
    # this; every deadline_sweep_interval_s each API process aborts the queued jobs
    # past theirs (an executor checks it too before it starts a job).
    max_job_deadline_s: float = 24 * 3600.0
    deadline_sweep_interval_s: float = 1.0
    job_max_attempts: int = 3
    # A job's result (its JSON) or list of outputs larger than this is stored as a blob
    # and the event carries its key, size and SHA-256 (a claim check); a result larger
    # than result_max_bytes fails the job with kind output_limit.
    result_inline_bytes: int = 64 * 1024
    result_max_bytes: int = 8 * 1024 * 1024
    # What a job may leave in its output folder (entries of any kind; apparent sizes);
    # more fails it with kind `output_limit`.
    max_output_files: int = 1000
    max_output_file_bytes: int = 256 * 1024 * 1024
    max_output_bytes: int = 1024 * 1024 * 1024
    setup_timeout_s: float = 120.0  # a worker's import + setup(); then kind "setup_timeout"
    worker_memory_mb: int = 1024
    worker_max_processes: int = 64
    worker_tmp_mb: int = 256  # each worker's private /tmp (a tmpfs: memory), emptied per job
    worker_idle_timeout_s: float = 300.0
    workers_per_version: int = 2
    workers_total: int = 8
    # Limits per owner (an admin overrides them per user: PUT /v1/users/{id}/limits).
    # Queued: jobs waiting to start, over it POST /v1/jobs answers 429. Running: jobs
    # of one owner running at once on one executor (0: no cap; slots are shared in turn
    # between owners with jobs waiting either way).
    max_queued_jobs_per_owner: int = 1000
    max_running_jobs_per_owner: int = 0
    # How many requested jobs an executor holds ahead of its slots (unacknowledged, kept
    # alive by heartbeats), to share its slots between owners in turn: another owner's
    # job is seen while fewer than this many jobs are queued ahead of it.
    executor_window: int = 2000
    # Commands (POST/PUT/PATCH/DELETE) per API key: a token bucket refilled at
    # rate_limit_per_s holding up to rate_limit_burst; 0 turns the limit off.
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 200
    # While other keys' requests are in progress, commands of one key in progress at once
    # in one API process (the others wait their turn), so that one key's burst does not
    # queue every other caller behind it; a key alone is not held back. 0: no limit.
    # One: a key's burst then goes through one command at a time, which leaves the
    # machine room for the others' jobs (bench.fairness); one command takes a few ms, so
    # one at a time still carries several times the default rate.
    max_concurrent_commands_per_key: int = 1
    docker_base_image: str = "python:3.11-slim"
    docker_host: str | None = None
    registry: str | None = None  # CLINAI_REGISTRY: push docker images there, run by digest
    # Webhooks (the notifier) and the live event stream
    webhook_key: str | None = None  # derives signing secrets; default: from signing_key
    webhook_allow_networks: str = ""  # comma-separated CIDRs exempt from the SSRF guard
    webhook_timeout_s: float = 10.0
    webhook_max_response_bytes: int = 64 * 1024
    webhook_retry_base_s: float = 5.0
    webhook_retry_max_delay_s: float = 2 * 3600.0
    webhook_retry_horizon_s: float = 24 * 3600.0
    webhook_disable_after_failures: int = 20
    webhook_disable_after_s: float = 24 * 3600.0
    webhook_rotation_grace_s: float = 24 * 3600.0
    webhook_endpoint_concurrency: int = 4
    sse_heartbeat_s: float = 15.0
    # Prometheus metrics: each service serves /metrics on metrics_host:metrics_port (no
    # authentication: a private interface) when a port is set; `clinai up` gives its
    # services the ports from metrics_port on. The API also answers /metrics on its own
    # port to `Authorization: Bearer <metrics_token>` or an admin API key.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_token: str | None = None
    # The dashboard: a session ends after session_idle_s without a request, and after
    # session_max_s in any case. open_signup lets anyone make an account (off: the admin
    # creates users and invitations). Failed sign-ins: at most this many per account
    # name and per client address within sign_in_window_s, then 429 until it has passed.
    session_idle_s: float = 8 * 3600.0
    session_max_s: float = 7 * 24 * 3600.0
    open_signup: bool = False
    sign_in_failures_per_account: int = 5
    sign_in_failures_per_address: int = 20
    sign_in_window_s: float = 900.0
    # Password hashes (Argon2id, ~64 MiB and tens of ms of CPU each) computed at once by
    # one process; None: its CPU count. More sign-ins wait their turn.
    argon2_concurrency: int | None = None

    @property
    def blob_root(self) -> Path:
        return self.blob_dir if self.blob_dir is not None else self.data_dir / "blobs"

    @property
    def nats_servers(self) -> list[str]:
        """The NATS servers CLINAI_NATS_URL names (one, or a cluster's, comma-separated)."""
        if self.nats_url is None:
            return []
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @property
    def api_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read `CLINAI_<FIELD>` variables; keyword overrides win over the environment."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in msgspec.structs.fields(cls):
            raw = source.get(f"CLINAI_{field.name.upper()}")
            if raw is not None and raw != "":
                values[field.name] = raw
        if "ca_bundle" not in values and Path(_DEBIAN_CA_BUNDLE).exists():
            values["ca_bundle"] = _DEBIAN_CA_BUNDLE
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            settings = msgspec.convert(values, cls, strict=False, dec_hook=_decode_path)
        except msgspec.ValidationError as err:
            # The message carries the field's path, e.g. "Expected `int`, got `str` - at `$.port`".
            raise SettingsError(
                f"invalid setting: {err} (environment variable CLINAI_<FIELD>)"
            ) from err
        if settings.max_header_bytes < 1024 or settings.max_headers < 8:
            raise SettingsError(
                "CLINAI_MAX_HEADER_BYTES must be at least 1024 and CLINAI_MAX_HEADERS at least 8"
            )
        if settings.nats_url is not None and not settings.nats_servers:
            raise SettingsError("CLINAI_NATS_URL names no server: nats://host:4222[,nats://...]")
        if settings.stream_replicas not in (1, 3, 5):
            raise SettingsError("CLINAI_STREAM_REPLICAS must be 1, 3 or 5")
        try:
            validate_sync(settings.nats_sync)
        except ValueError as err:
            raise SettingsError(f"CLINAI_NATS_SYNC: {err}") from err
        if not 0 <= settings.projection_busy_interval_s <= 1:
            raise SettingsError("CLINAI_PROJECTION_BUSY_INTERVAL_S must be from 0 to 1 (seconds)")
        if settings.ready_projection_lag < 0 or settings.ready_projection_stall_s <= 0:
            raise SettingsError(
                "CLINAI_READY_PROJECTION_LAG must not be negative and "
                "CLINAI_READY_PROJECTION_STALL_S must be positive"
            )
        if settings.input_orphan_age_s <= 0 or settings.input_sweep_interval_s <= 0:
            raise SettingsError(
                "CLINAI_INPUT_ORPHAN_AGE_S and CLINAI_INPUT_SWEEP_INTERVAL_S must be positive"
            )
        if settings.upload_ttl_s <= 0 or settings.input_url_timeout_s <= 0:
            raise SettingsError(
                "CLINAI_UPLOAD_TTL_S and CLINAI_INPUT_URL_TIMEOUT_S must be positive"
            )
        if settings.max_job_deadline_s <= 0 or settings.deadline_sweep_interval_s <= 0:
            raise SettingsError(
                "CLINAI_MAX_JOB_DEADLINE_S and CLINAI_DEADLINE_SWEEP_INTERVAL_S must be positive"
            )
        if settings.job_timeout_s > settings.job_timeout_max_s:
            raise SettingsError("CLINAI_JOB_TIMEOUT_S must not exceed CLINAI_JOB_TIMEOUT_MAX_S")
        if not 1024 <= settings.result_inline_bytes <= _MAX_RESULT_INLINE_BYTES:
            raise SettingsError(
                f"CLINAI_RESULT_INLINE_BYTES must be from 1024 to {_MAX_RESULT_INLINE_BYTES} "
                "(an event must stay well under the NATS server's max_payload)"
            )
        if not settings.result_inline_bytes <= settings.result_max_bytes <= _MAX_RESULT_BYTES:
            raise SettingsError(
                "CLINAI_RESULT_MAX_BYTES must be at least CLINAI_RESULT_INLINE_BYTES and at "
                f"most {_MAX_RESULT_BYTES} (a worker's reply is limited to 16 MiB)"
            )
        if settings.worker_tmp_mb < 1:
            raise SettingsError("CLINAI_WORKER_TMP_MB must be at least 1 (MiB)")
        if (
            min(
                settings.max_output_files, settings.max_output_file_bytes, settings.max_output_bytes
            )
            < 0
        ):
            raise SettingsError(
                "CLINAI_MAX_OUTPUT_FILES, CLINAI_MAX_OUTPUT_FILE_BYTES and "
                "CLINAI_MAX_OUTPUT_BYTES must not be negative"
            )
        if settings.setup_timeout_s <= 0:
            raise SettingsError("CLINAI_SETUP_TIMEOUT_S must be positive (seconds)")
        if settings.webhook_timeout_s <= 0 or settings.webhook_retry_base_s <= 0:
            raise SettingsError(
                "CLINAI_WEBHOOK_TIMEOUT_S and CLINAI_WEBHOOK_RETRY_BASE_S must be positive"
            )
        if settings.webhook_endpoint_concurrency < 1 or settings.sse_heartbeat_s <= 0:
            raise SettingsError(
                "CLINAI_WEBHOOK_ENDPOINT_CONCURRENCY must be at least 1 and "
                "CLINAI_SSE_HEARTBEAT_S positive"
            )
        if settings.max_queued_jobs_per_owner < 0 or settings.max_running_jobs_per_owner < 0:
            raise SettingsError(
                "CLINAI_MAX_QUEUED_JOBS_PER_OWNER and CLINAI_MAX_RUNNING_JOBS_PER_OWNER must "
                "not be negative (0 running: no cap)"
            )
        if settings.executor_window < settings.workers_total:
            raise SettingsError("CLINAI_EXECUTOR_WINDOW must be at least CLINAI_WORKERS_TOTAL")
        if not 0 < settings.body_idle_timeout_s <= 3600:
            raise SettingsError("CLINAI_BODY_IDLE_TIMEOUT_S must be above 0 and at most 3600")
        if settings.max_concurrent_commands_per_key < 0:
            raise SettingsError("CLINAI_MAX_CONCURRENT_COMMANDS_PER_KEY must not be negative")
        for name in ("s3_endpoint_url", "s3_public_endpoint_url"):
            url = getattr(settings, name)
            if url is not None and not url.startswith(("http://", "https://")):
                raise SettingsError(f"CLINAI_{name.upper()} must be an http(s) URL, not {url!r}")
        if settings.blob_backend == "s3" and not settings.s3_bucket:
            raise SettingsError("CLINAI_S3_BUCKET must name a bucket for CLINAI_BLOB_BACKEND=s3")
        if settings.metrics_port is not None and not 0 < settings.metrics_port < 65536:
            raise SettingsError("CLINAI_METRICS_PORT must be a port number (1 to 65535)")
        if settings.metrics_token is not None and len(settings.metrics_token) < 16:
            raise SettingsError(
                "CLINAI_METRICS_TOKEN must be at least 16 characters (it reads the API's "
                "/metrics): generate one, e.g. `openssl rand -hex 32`"
            )
        if settings.rate_limit_per_s < 0 or settings.rate_limit_burst < 1:
            raise SettingsError(
                "CLINAI_RATE_LIMIT_PER_S must not be negative (0: no limit) and "
                "CLINAI_RATE_LIMIT_BURST must be at least 1"
            )
        return settings
