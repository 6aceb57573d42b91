-- A job whose input the executor fetches from a URL (JobRequested.input_url): the URL
-- as the API shows it, redacted (projections/urls.py: no userinfo, query values or
-- fragment); NULL for a job on an uploaded input. Jobs projected before this migration
-- show NULL until `clinai projections rebuild`.
ALTER TABLE jobs ADD COLUMN input_url text;
