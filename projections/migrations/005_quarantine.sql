-- Events the read models could not store (text Postgres refuses, a value out of range) or
-- messages that are no event at all (then event_id and occurred_at are NULL): each is
-- recorded here, in the same transaction as the checkpoint moving past it, and skipped.
-- Replaying the stream records the same rows (nothing here depends on when).
CREATE TABLE quarantine (
    seq bigint PRIMARY KEY,
    subject text NOT NULL,
    event_id text,
    occurred_at timestamptz,
    error text NOT NULL
);
