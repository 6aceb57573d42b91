-- Read models built from the event stream. Every table can be dropped and rebuilt by
-- replaying the stream: they are applied with search_path set to the target schema
-- (the live one, or a fresh one during `clinai projections rebuild`), so nothing here
-- names a schema.

CREATE TABLE checkpoint (
    projection text PRIMARY KEY,
    last_seq bigint NOT NULL
);

CREATE TABLE users (
    id text PRIMARY KEY,
    name text NOT NULL,
    is_admin boolean NOT NULL,
    created_at timestamptz NOT NULL,
    last_seq bigint NOT NULL
);

CREATE TABLE api_keys (
    id text PRIMARY KEY,
    user_id text NOT NULL,
    name text NOT NULL,
    key_hash text NOT NULL UNIQUE,
    prefix text NOT NULL,
    is_admin boolean NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz,
    last_seq bigint NOT NULL
);

CREATE TABLE models (
    id text PRIMARY KEY,
    owner text NOT NULL,
    name text NOT NULL,
    description text NOT NULL,
    visibility text NOT NULL,
    latest_version integer NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    last_seq bigint NOT NULL
);
CREATE INDEX models_owner ON models (owner, created_at);

CREATE TABLE versions (
    id text PRIMARY KEY,
    model_id text NOT NULL,
    owner text NOT NULL,
    number integer NOT NULL,
    status text NOT NULL,  -- uploaded | building | ready | failed
    package_key text NOT NULL,
    package_hash text NOT NULL,
    requirements_hash text NOT NULL,
    size_bytes bigint NOT NULL,
    filename text NOT NULL,
    runtime text,
    artifact text,
    artifact_details jsonb,
    build_attempt integer NOT NULL,
    build_duration_s double precision,
    failure_reason text,
    log_tail text,
    log_key text,
    reused_from text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    built_at timestamptz,
    last_seq bigint NOT NULL
);
CREATE INDEX versions_model ON versions (model_id, number);
CREATE INDEX versions_package_hash ON versions (package_hash) WHERE status = 'ready';

CREATE TABLE build_log_chunks (
    version_id text NOT NULL,
    index integer NOT NULL,
    text text NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (version_id, index)
);

CREATE TABLE jobs (
    id text PRIMARY KEY,
    owner text NOT NULL,
    model_id text NOT NULL,
    version_id text NOT NULL,
    status text NOT NULL,  -- queued | running | succeeded | failed | canceled
    input_key text NOT NULL,
    input_filename text NOT NULL,
    input_size_bytes bigint NOT NULL,
    params jsonb NOT NULL,
    timeout_s double precision NOT NULL,
    webhook jsonb,
    cancel_requested boolean NOT NULL,
    attempt integer NOT NULL,
    result jsonb,
    outputs jsonb NOT NULL,
    error_kind text,
    error_message text,
    traceback text,
    timings jsonb,
    log_key text,
    created_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    updated_at timestamptz NOT NULL,
    last_seq bigint NOT NULL
);
CREATE INDEX jobs_owner ON jobs (owner, created_at DESC);
CREATE INDEX jobs_version ON jobs (version_id, created_at DESC);
