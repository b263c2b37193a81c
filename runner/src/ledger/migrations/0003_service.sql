-- `keepsake run`: when a deferred job wakes (Unix seconds; failed jobs wake
-- by their backoff, computed from `attempts` and `updated_at`), and what the
-- service reports to `keepsake status` while it runs.
ALTER TABLE jobs ADD COLUMN wake_at INTEGER;
CREATE TABLE service_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
