-- Offsite pushes: one row per (target, key, bytes), for each library file (and
-- sidecar) a stage asked to push. Never deleted; `state` tells where it is:
-- pending | done | deferred (target down, wakes at wake_at) | conflict (the
-- key holds other bytes; never overwritten).
CREATE TABLE pushes (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs(id),
    target      TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    file        TEXT    NOT NULL,  -- library-relative path
    blake3      TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    etag        TEXT,
    wake_at     INTEGER,
    pushed_at   INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    -- Other bytes under a key already used make a second row: its push
    -- finds the key taken and becomes a conflict, reported, never lost.
    UNIQUE (target, key, blake3)
);
CREATE INDEX pushes_state ON pushes(state, wake_at);
