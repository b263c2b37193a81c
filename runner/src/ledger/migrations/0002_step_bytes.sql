-- How many bytes of its file each stage call read through the host's
-- bounded `read` (for `keepsake-bench` and for spotting a stage that reads
-- more than it should).
ALTER TABLE steps ADD COLUMN bytes_read INTEGER NOT NULL DEFAULT 0;
