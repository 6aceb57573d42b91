-- A job's result or outputs list too large for an event is stored as a blob: the row
-- keeps its claim check ({key, size_bytes, sha256}); `result` is then NULL and
-- `outputs` empty.
ALTER TABLE jobs ADD COLUMN result_blob jsonb;
ALTER TABLE jobs ADD COLUMN outputs_blob jsonb;
