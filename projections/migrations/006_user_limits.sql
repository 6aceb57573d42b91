-- Per-user job limits an admin set (UserLimitsSet; NULL: the operator's default), and
-- an index of jobs not started, for the count of an owner's queued jobs the API checks.
-- Its predicate names started_at, not status: a row changes started_at once (at
-- JobStarted), so only that update loses Postgres's HOT path (an index on status
-- would cost it every status change; jobs canceled before they start stay in the
-- index and are filtered by status).
ALTER TABLE users ADD COLUMN max_queued_jobs integer;
ALTER TABLE users ADD COLUMN max_running_jobs integer;
CREATE INDEX jobs_owner_not_started ON jobs (owner) WHERE started_at IS NULL;
