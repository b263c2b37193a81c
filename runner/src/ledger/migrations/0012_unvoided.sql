-- Jobs whose change is committed (a finished job, a file moved to or
-- settled in the archive, a sidecar about to be rewritten) and whose years'
-- archive verdicts are not voided yet. A row is written in the transaction
-- that commits the change, and removed once those verdicts are gone; rows
-- left at open (a stop came between the two) void their years then.
CREATE TABLE unvoided (job_id INTEGER PRIMARY KEY);
