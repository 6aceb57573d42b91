-- A typed version's job: its inputs as resolved at submission (JobRequested.inputs:
-- defaults applied, files by their names in the job's input folder); NULL for a job of
-- a version whose run() takes input_path and params. Jobs projected before this
-- migration show NULL until `clinai projections rebuild`.
ALTER TABLE jobs ADD COLUMN inputs jsonb;
