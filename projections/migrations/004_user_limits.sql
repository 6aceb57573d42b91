-- Per-user job limits an admin set (UserLimitsSet; NULL: the operator's default), and
-- the count of an owner's queued jobs the API checks on every submission.
ALTER TABLE users ADD COLUMN max_queued_jobs integer;
ALTER TABLE users ADD COLUMN max_running_jobs integer;
CREATE INDEX jobs_owner_queued ON jobs (owner) WHERE status = 'queued';
