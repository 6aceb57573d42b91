-- Webhook subscriptions, their deliveries and every delivery attempt. No secret is
-- stored anywhere: only the generation it is derived from.

CREATE TABLE webhooks (
    id text PRIMARY KEY,
    owner text NOT NULL,
    url text NOT NULL,
    events jsonb NOT NULL,
    description text NOT NULL,
    generation integer NOT NULL,
    rotated_at timestamptz,
    previous_valid_until timestamptz,
    enabled boolean NOT NULL,
    disabled_reason text,
    disabled_at timestamptz,
    deleted_at timestamptz,
    consecutive_failures integer NOT NULL,
    failing_since timestamptz,
    last_delivery_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    created_seq bigint NOT NULL,
    last_seq bigint NOT NULL
);
CREATE INDEX webhooks_owner ON webhooks (owner, created_at DESC, id DESC);

CREATE TABLE webhook_deliveries (
    id text PRIMARY KEY,
    endpoint_id text NOT NULL,
    owner text NOT NULL,
    message_id text NOT NULL,
    event_type text NOT NULL,
    source_seq bigint NOT NULL,
    source_id text NOT NULL,
    resource_id text NOT NULL,
    url text NOT NULL,
    status text NOT NULL,  -- queued | retrying | succeeded | failed
    attempts integer NOT NULL,
    next_attempt_at timestamptz,
    horizon_from timestamptz NOT NULL,
    last_status_code integer,
    last_error text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    last_seq bigint NOT NULL
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('queued', 'retrying');

CREATE TABLE webhook_attempts (
    delivery_id text NOT NULL,
    attempt integer NOT NULL,
    endpoint_id text NOT NULL,
    outcome text NOT NULL,
    status_code integer,
    latency_ms double precision NOT NULL,
    error text,
    next_attempt_at timestamptz,
    attempted_at timestamptz NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
