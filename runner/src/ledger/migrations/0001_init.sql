-- keepsake ledger, schema 1.
-- Paths relative to an inbox are stored as raw bytes (BLOB): file names on
-- Linux need not be UTF-8. Times are Unix seconds unless named *_ns.

-- One row per file keepsake has seen in an inbox: the fingerprint that lets a
-- rescan skip it without reading a byte, and the job that took it.
CREATE TABLE sources (
    inbox     TEXT    NOT NULL,
    rel_path  BLOB    NOT NULL,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    inode     INTEGER NOT NULL,
    job_id    INTEGER NOT NULL REFERENCES jobs(id),
    PRIMARY KEY (inbox, rel_path)
) WITHOUT ROWID;

CREATE TABLE jobs (
    id                 INTEGER PRIMARY KEY,
    inbox              TEXT    NOT NULL,
    rel_path           BLOB    NOT NULL,
    source_path        BLOB    NOT NULL,  -- absolute path of the inbox file
    size               INTEGER NOT NULL,
    mtime_ns           INTEGER NOT NULL,
    inode              INTEGER NOT NULL,
    companions         TEXT    NOT NULL DEFAULT '[]',  -- JSON list of file names
    -- pending | done | duplicate | quarantined | skipped | failed
    state              TEXT    NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    last_error         TEXT,
    reason             TEXT,              -- why quarantined or skipped
    blake3             TEXT,
    sha1               TEXT,
    media_kind         TEXT,
    capture_time       TEXT,              -- ISO 8601, offset when known
    capture_source     TEXT,
    capture_confidence TEXT,
    dest_path          TEXT,              -- relative to the library (or quarantine) root
    duplicate_of       INTEGER REFERENCES jobs(id),
    facts              TEXT    NOT NULL DEFAULT '{}',
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX jobs_state ON jobs(state);
CREATE INDEX jobs_blake3 ON jobs(blake3);

-- What each stage said about each attempt of a job.
CREATE TABLE steps (
    id        INTEGER PRIMARY KEY,
    job_id    INTEGER NOT NULL REFERENCES jobs(id),
    attempt   INTEGER NOT NULL,
    stage     TEXT    NOT NULL,
    outcome   TEXT    NOT NULL,  -- ok | error
    effects   TEXT    NOT NULL,  -- JSON
    error     TEXT,
    micros    INTEGER NOT NULL,
    at        INTEGER NOT NULL
);
CREATE INDEX steps_job ON steps(job_id);

-- Every file in the library, by the BLAKE3 of its original bytes.
CREATE TABLE assets (
    id             INTEGER PRIMARY KEY,
    job_id         INTEGER NOT NULL UNIQUE REFERENCES jobs(id),
    blake3         TEXT    NOT NULL UNIQUE,
    sha1           TEXT    NOT NULL,
    size           INTEGER NOT NULL,
    media_kind     TEXT    NOT NULL,
    capture_time   TEXT,
    capture_source TEXT,
    library_path   TEXT    NOT NULL UNIQUE,
    created_at     INTEGER NOT NULL
);

-- The effect journal: every file keepsake writes is recorded here as an
-- intent before the first byte is written, and marked done only after the
-- final file is verified. Start-up replays what is neither done nor rolled back.
CREATE TABLE journal (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs(id),
    action      TEXT    NOT NULL,  -- place | companion | quarantine
    source      BLOB    NOT NULL,  -- absolute
    dest        BLOB    NOT NULL,  -- absolute
    temp        BLOB    NOT NULL,  -- absolute, in dest's folder
    blake3      TEXT    NOT NULL,  -- of the bytes that must end up at dest
    size        INTEGER NOT NULL,
    -- JSON of the job's outcome, so recovery can finish the job when every
    -- file of it reached its destination before the crash.
    outcome     TEXT    NOT NULL,
    state       TEXT    NOT NULL,  -- intent | done | rolled_back
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX journal_open ON journal(state) WHERE state = 'intent';

-- A small key-value store private to each stage.
CREATE TABLE kv (
    stage  TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  BLOB NOT NULL,
    PRIMARY KEY (stage, key)
) WITHOUT ROWID;
