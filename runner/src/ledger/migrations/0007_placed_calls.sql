-- Calls of `placed`-phase stages (Immich, ...): one row per file and stage,
-- made once the file is in the library, and kept: `state` tells where it is.
-- pending | done | deferred (the stage or its server said "later"; wakes at
-- wake_at) | failed (needs a person: `keepsake immich sync` queues the
-- immich stage's again).
CREATE TABLE placed_calls (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs(id),
    stage       TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    wake_at     INTEGER,
    -- What the stage recorded (JSON object), e.g. the Immich asset id.
    facts       TEXT    NOT NULL DEFAULT '{}',
    requests    INTEGER NOT NULL DEFAULT 0,
    done_at     INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (job_id, stage)
);
CREATE INDEX placed_calls_due ON placed_calls(stage, state, wake_at);
-- A Live Photo's still finds its video (`live.still_job` fact) without
-- reading every job.
CREATE INDEX jobs_live_still ON jobs (json_extract(facts, '$."live.still_job"'))
    WHERE json_extract(facts, '$."live.still_job"') IS NOT NULL;
