-- A job's deadline (JobRequested.deadline): past it a queued job is aborted (status
-- `aborted`) and a running one canceled; NULL for a job without one. The partial index
-- serves the API's sweep for queued jobs whose deadline passed lately. It names only
-- `deadline`, which never changes: an index on (or a predicate naming) `status` would
-- cost every job's status changes Postgres's HOT path. Jobs projected before this
-- migration show NULL until `clinai projections rebuild`.
ALTER TABLE jobs ADD COLUMN deadline timestamptz;
CREATE INDEX jobs_deadline ON jobs (deadline) WHERE deadline IS NOT NULL;
