-- A job's deadline (JobRequested.deadline): past it a queued job is aborted (status
-- `aborted`) and a running one canceled; NULL for a job without one. The partial index
-- serves the API's sweep for queued jobs past their deadline. Jobs projected before
-- this migration show NULL until `clinai projections rebuild`.
ALTER TABLE jobs ADD COLUMN deadline timestamptz;
CREATE INDEX jobs_queued_deadline ON jobs (deadline) WHERE status = 'queued' AND deadline IS NOT NULL;
