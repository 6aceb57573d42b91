-- Keyset pagination (newest first, ties by id) for listings across owners, and the
-- builder's lookup of a ready artifact by package and runtime.
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);
CREATE INDEX models_created ON models (created_at DESC, id DESC);
DROP INDEX versions_package_hash;
CREATE INDEX versions_ready_package ON versions (package_hash, runtime, built_at) WHERE status = 'ready';
