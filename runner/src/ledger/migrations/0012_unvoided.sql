-- Jobs whose change is committed (a finished job, a file moved to or
-- settled in the archive, a sidecar about to be rewritten) and whose years'
-- archive verdicts are not voided yet. A row is written in the transaction
-- that commits the change, and removed once those verdicts are gone; rows
-- left at open (a stop came between the two) void their years then.
-- Job 0 stands for every year: a change whose years are not known (a
-- failed check, a moved sidecar), or, as seeded here, whatever a ledger
-- from before this migration left unvoided: the first open after it voids
-- every verdict once.
CREATE TABLE unvoided (job_id INTEGER PRIMARY KEY);
INSERT INTO unvoided (job_id) VALUES (0);
